"""A notebook cell that upgrades a package the image preinstalled (rich, one of fnjob's own
dependencies) as the notebook user, from a wheel in the workspace, then runs a job."""

import importlib.metadata
import json
import socket
import subprocess
import sys

WHEELS = "/home/jovyan/wheels"

subprocess.run(
    [sys.executable, "-m", "pip", "install", "-U", "--no-index", "--find-links", WHEELS, "rich"],
    check=True,
)
check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
print(f"PIP CHECK {check.returncode} {check.stdout.strip()}")

import rich  # noqa: E402 (imported after the upgrade on purpose)

print(f"UPGRADED rich {importlib.metadata.version('rich')} in {rich.__file__}")

from fnjob import fairing  # noqa: E402


def where_am_i():
    return {"hostname": socket.gethostname()}


fairing.config.set_builder("append", image_name="fairing-job", push=True)
print("RESULT " + json.dumps(fairing.config.fn(where_am_i)()))
