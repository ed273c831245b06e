"""kubeflow-eks bootstrap: validate the config, create what CI needs, export its settings."""

import pulumi

from ci_bootstrap.config import load_bootstrap_config
from ci_bootstrap.program import build_bootstrap

for name, value in build_bootstrap(load_bootstrap_config()).items():
    pulumi.export(name, value)
