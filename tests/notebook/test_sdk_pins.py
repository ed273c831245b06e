"""The notebook image's SDKs speak the APIs Kubeflow 26.03 deploys.

The Kubeflow SDK pinned in ``images/notebook/requirements.txt`` submits a TrainJob placed
on a GPU group (the node selector and tolerations of that group in ``gpu-groups.json``, as
PodTemplateOverrides) to a fake API server serving the release's own ClusterTrainingRuntime.
What it POSTs is pruned with the release's TrainJob CRD the way the API server prunes (the
SDK's client does not ask for strict validation, so an unknown field is dropped without an
error): nothing may be dropped. The pins must also be the versions the release runs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from components.gpu.scheduling import gpu_groups_document
from model import EksGpuGroup, Taint
from tests.crd_schema import pruned
from tests.kubeflow.conftest import UPSTREAM_DATA, UPSTREAM_EXAMPLE_OUTPUT

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_REQUIREMENTS = REPO_ROOT / "images" / "notebook" / "requirements.txt"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TRAINER_API = "/apis/trainer.kubeflow.org/v1alpha1"
NAMESPACE = "team-ml"
RUNTIME = "torch-distributed"
# A GPU group as a stack declares it: spot capacity with multi-GPU nodes, tainted.
SPOT_GROUP = EksGpuGroup(
    name="gpu-multi-spot",
    instance_types=("g5.12xlarge",),
    labels={"gpu-shape": "multi"},
    taints=(
        Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule"),
        Taint(key="capacity", value="spot", effect="NoSchedule"),
    ),
)


def notebook_pins() -> dict[str, str]:
    lines = NOTEBOOK_REQUIREMENTS.read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


@pytest.fixture(scope="module")
def release_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """The 26.03 render's objects this test needs, by (kind, name)."""
    data = Path(os.environ.get("KUBEFLOW_UPSTREAM_DATA") or UPSTREAM_DATA)
    output = data / UPSTREAM_EXAMPLE_OUTPUT
    if not output.is_file():
        pytest.skip(f"{UPSTREAM_EXAMPLE_OUTPUT} not found in {data} (KUBEFLOW_UPSTREAM_DATA)")
    wanted = ("name: trainjobs.trainer.kubeflow.org", "kind: ClusterTrainingRuntime", "image: ")
    found: dict[tuple[str, str], dict[str, Any]] = {}
    with gzip.open(output, "rt") as stream:
        # Only the documents that may matter are parsed (the render is ~9 MB).
        for text in stream.read().split("\n---\n"):
            if any(w in text for w in wanted):
                obj = yaml.load(text, Loader=_LOADER)
                if obj:
                    found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


def _deployed_images(objects: dict[tuple[str, str], dict[str, Any]]) -> set[str]:
    return {
        c["image"]
        for obj in objects.values()
        if obj["kind"] == "Deployment"
        for c in obj["spec"]["template"]["spec"]["containers"]
    }


def _image_tags(images: set[str], repository: str) -> set[str]:
    return {i.rpartition(":")[2] for i in images if re.fullmatch(rf"{repository}:[^:/]+", i)}


class TrainerApi:
    """The Trainer API as the SDK sees it: the release's runtimes, and TrainJob creation."""

    def __init__(self, runtimes: dict[str, dict[str, Any]]) -> None:
        self.runtimes = runtimes
        self.created: list[dict[str, Any]] = []


def _handler(api: TrainerApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            prefix = f"{TRAINER_API}/clustertrainingruntimes/"
            name = self.path.removeprefix(prefix)
            if self.path.startswith(prefix) and name in api.runtimes:
                self._send(200, api.runtimes[name])
            else:
                self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != f"{TRAINER_API}/namespaces/{NAMESPACE}/trainjobs":
                self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                return
            api.created.append(body)
            self._send(201, body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def trainer_api(
    release_objects: dict[tuple[str, str], dict[str, Any]],
) -> Iterator[tuple[TrainerApi, client.Configuration]]:
    runtimes = {
        name: obj
        for (kind, name), obj in release_objects.items()
        if kind == "ClusterTrainingRuntime"
    }
    api = TrainerApi(runtimes)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api, configuration
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def train() -> None:
    print("training")


def test_the_pinned_sdk_is_the_one_these_tests_run() -> None:
    pins = notebook_pins()
    assert version("kubeflow") == pins["kubeflow"]
    assert version("kubeflow-trainer-api") == pins["kubeflow-trainer-api"]


def test_a_gpu_placed_trainjob_from_the_pinned_sdk_survives_the_releases_crd(
    release_objects: dict[tuple[str, str], dict[str, Any]],
    trainer_api: tuple[TrainerApi, client.Configuration],
) -> None:
    from kubeflow.trainer import CustomTrainer, KubernetesBackendConfig, TrainerClient
    from kubeflow.trainer.options import (
        PodSpecOverride,
        PodTemplateOverride,
        PodTemplateOverrides,
    )

    api, configuration = trainer_api
    # What a notebook user reads from /etc/fnjob/gpu-groups.json for the group.
    [group] = gpu_groups_document([SPOT_GROUP])["groups"]
    trainer = TrainerClient(
        KubernetesBackendConfig(namespace=NAMESPACE, client_configuration=configuration)
    )
    placement = PodTemplateOverride(
        target_jobs=["node"],
        metadata={"labels": {"sidecar.istio.io/inject": "false"}},
        spec=PodSpecOverride(node_selector=group["nodeSelector"], tolerations=group["tolerations"]),
    )
    trainer.train(
        runtime=RUNTIME,
        trainer=CustomTrainer(func=train, num_nodes=2, resources_per_node={"gpu": 4}),
        options=[PodTemplateOverrides(placement)],
    )

    [submitted] = api.created
    [override] = submitted["spec"]["podTemplateOverrides"]
    assert override["spec"]["nodeSelector"] == group["nodeSelector"]
    assert override["spec"]["tolerations"] == group["tolerations"]
    crd = release_objects[("CustomResourceDefinition", "trainjobs.trainer.kubeflow.org")]
    stored, dropped = pruned(submitted, crd)
    assert dropped == []
    assert stored == submitted


def test_pruning_drops_what_the_release_does_not_know(
    release_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    # What kubeflow 0.4-0.5 send for the same placement; Trainer v2.1.0 stores it without it.
    crd = release_objects[("CustomResourceDefinition", "trainjobs.trainer.kubeflow.org")]
    newer = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "t"},
        "spec": {
            "runtimeRef": {"name": RUNTIME},
            "runtimePatches": [{"manager": "sdk", "trainingRuntimeSpec": {}}],
        },
    }
    stored, dropped = pruned(newer, crd)
    assert dropped == [".spec.runtimePatches"]
    assert stored["spec"] == {"runtimeRef": {"name": RUNTIME}}


def test_the_pins_are_the_versions_the_release_runs(
    release_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    pins = notebook_pins()
    images = _deployed_images(release_objects)
    trainer = _image_tags(images, r"ghcr\.io/kubeflow/trainer/trainer-controller-manager")
    assert trainer == {f"v{pins['kubeflow-trainer-api']}"}
    pipelines = _image_tags(images, r"ghcr\.io/kubeflow/kfp-api-server")
    assert pipelines == {pins["kfp"]}
    assert pins["kfp-server-api"] == pins["kfp-pipeline-spec"] == pins["kfp"]


# -- Kubeflow Pipelines ------------------------------------------------------------------------

KFP_PIPELINE = """
import sys
from kfp import compiler, dsl

@dsl.component(base_image="python:3.11")
def train(epochs: int) -> float:
    return 0.25

@dsl.pipeline(name="journey")
def journey(epochs: int = 3):
    train(epochs=epochs)

compiler.Compiler().compile(journey, sys.argv[1])
"""


@pytest.fixture(scope="module")
def kfp_python() -> Path:
    """A Python with the notebook image's kfp pins: they cannot share the test venv (kfp caps
    kubernetes below the lock's), so they get their own venv, cached under .cache/."""
    pins = sorted(f"{n}=={v}" for n, v in notebook_pins().items() if n.startswith("kfp"))
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    venv = REPO_ROOT / ".cache" / f"kfp-sdk-{key}"
    python = venv / "bin" / "python"
    if not (venv / "ready").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins],
            capture_output=True,
            text=True,
            check=False,
        )
        if installed.returncode != 0:
            pytest.fail(f"installing {pins} failed:\n{installed.stderr[-3000:]}")
        (venv / "ready").touch()
    return python


def test_pipelines_compiled_in_the_notebook_run_the_backends_sdk_in_every_step(
    kfp_python: Path, tmp_path: Path
) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(KFP_PIPELINE)
    compiled = tmp_path / "pipeline.yaml"
    result = subprocess.run(
        [str(kfp_python), str(script), str(compiled)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(compiled.read_text())
    backend = notebook_pins()["kfp"]
    # What the run request carries, and what each step's pod pip-installs before running.
    assert spec["sdkVersion"] == f"kfp-{backend}"
    [executor] = spec["deploymentSpec"]["executors"].values()
    assert f"kfp=={backend}" in " ".join(executor["container"]["command"])
