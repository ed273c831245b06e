"""Run code in a notebook container: the admitted notebook pod, as podman runs it, next to a
fake Kubernetes API whose Job pods a podman kubelet runs from the pushed images.

The notebook container gets what its pod spec says (image pulled with the profile's pull
secret unless the node has it, env, the PodDefault's files, the workspace volume) and,
standing in for the pod's service account, a kubeconfig for the fake API in the pod's
namespace (``KUBECONFIG``); it shares the host's network so that 127.0.0.1 reaches the
registry and the API. The code runs as a script (``python3 notebook.py``): its functions
live in ``__main__``, as a notebook's do.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fnjob.conftest import PodmanConfig
from tests.fnjob.fake_kube_api import FakeKubeApi, JobScenario
from tests.fnjob.run_fixtures import write_kubeconfig
from tests.journey.notebook_pod import in_namespace
from tests.journey.podman_pod import (
    PodmanKubelet,
    PodSources,
    podman_options,
    pull_auth_file,
    pull_if_not_present,
    run_in_container,
)

KUBECONFIG_PATH = "/etc/journey/kubeconfig"
CODE_PATH = "/opt/journey/notebook.py"


@dataclass(frozen=True)
class NotebookRun:
    """What running the code gave: the container's output, the API's record, the kubelet's."""

    completed: subprocess.CompletedProcess[str]
    api: FakeKubeApi
    kubelet: PodmanKubelet

    @property
    def submitted_jobs(self) -> list[dict[str, Any]]:
        """The Jobs the notebook created, with the namespace from the request's path."""
        return [
            {**r.body, "namespace": r.path.split("/")[5]}
            for r in self.api.requests_to("POST", "/jobs")
        ]

    def result_line(self) -> str:
        """The text after ``RESULT`` on the line the code printed it."""
        found = [line for line in self.completed.stdout.splitlines() if line.startswith("RESULT ")]
        assert len(found) == 1, f"no RESULT line:\n{self.completed.stdout}\n{self.completed.stderr}"
        return found[0].removeprefix("RESULT ")


def pod_sources(objects: list[dict[str, Any]], namespace: str, workspace: Path) -> PodSources:
    """The namespace's objects as the API holds them, and the notebook's workspace claim."""
    return PodSources(
        config_maps=in_namespace(objects, "ConfigMap", namespace),
        secrets=in_namespace(objects, "Secret", namespace),
        service_accounts=in_namespace(objects, "ServiceAccount", namespace),
        claims={"train-workspace": workspace},
    )


def run_in_notebook(
    podman: PodmanConfig,
    pod: dict[str, Any],
    sources: PodSources,
    code: Path,
    scratch: Path,
) -> NotebookRun:
    """Run ``code`` in the notebook ``pod`` (already admitted by the webhook)."""
    kubelet = PodmanKubelet(podman, sources, scratch / "kubelet")
    image = pod["spec"]["containers"][0]["image"]
    scratch.mkdir(parents=True, exist_ok=True)
    failed = pull_if_not_present(podman, image, pull_auth_file(pod, sources, scratch / "auth"))
    assert failed is None, f"the notebook image does not pull: {failed}"
    with FakeKubeApi(JobScenario(run_pod=kubelet)) as api:
        kubeconfig = write_kubeconfig(
            scratch / "kubeconfig", api.host, pod["metadata"]["namespace"]
        )
        kubeconfig.chmod(0o644)
        options = podman_options(pod, sources, scratch / "notebook")
        options += ["--network", "host", "--env", f"KUBECONFIG={KUBECONFIG_PATH}"]
        options += ["--volume", f"{kubeconfig}:{KUBECONFIG_PATH}:ro"]
        options += ["--volume", f"{code}:{CODE_PATH}:ro"]
        completed = run_in_container(podman, image, options, ["python3", CODE_PATH])
    return NotebookRun(completed, api, kubelet)
