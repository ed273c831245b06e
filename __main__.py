"""kubeflow-eks: validate the stack's config, build the stack, export its outputs."""

import pulumi

from stack.load import load_stack_config
from stack.program import build_stack

for name, value in build_stack(load_stack_config()).items():
    pulumi.export(name, value)
