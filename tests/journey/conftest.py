"""The journey's real parts, built on fnjob's test fixtures (tests/fnjob/conftest.py).

- A ``docker-registry`` on 127.0.0.1 that demands credentials (htpasswd): the platform's CI
  account pushes the platform images, the profile's robot account is the profile's own
  credential (``registryDockerConfigs.lab``).
- podman and buildah with a private configuration trusting that registry; its auth file
  stays empty, so every pull names the credentials it uses.
- The notebook image built from the project's recipe (``tests.journey.images``), pushed.
- The objects the stack renders for the profile, pointing at all of that.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.fnjob.conftest import (
    PodmanConfig,
    RegistryServer,
    make_podman_config,
    release_podman_storage,
    require_tool,
    running_registry,
)
from tests.journey.images import Registry, push_notebook_image
from tests.journey.notebook_pod import in_namespace
from tests.journey.podman_pod import PodSources, pull_auth_file, pull_if_not_present
from tests.journey.profile import PROFILE, docker_config, render_profile_stack

PLATFORM_USER = ("platform-ci", "platform-ci-password")
PROFILE_USER = ("lab-robot", "lab-robot-password")


@dataclass(frozen=True)
class JourneyRegistry:
    """The registry, and an auth file with the platform CI's credentials."""

    server: RegistryServer
    platform: Registry

    @property
    def host(self) -> str:
        return self.server.host


@pytest.fixture(scope="session")
def journey_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JourneyRegistry]:
    work = tmp_path_factory.mktemp("journey-registry")
    htpasswd = work / "htpasswd"
    htpasswd.write_text(
        "".join(
            f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
            for user, password in (PLATFORM_USER, PROFILE_USER)
        )
    )
    with running_registry(work / "registry", htpasswd=htpasswd) as server:
        auth_file = work / "platform-auth.json"
        auth_file.write_text(docker_config(server.host, *PLATFORM_USER))
        yield JourneyRegistry(server, Registry(server.host, auth_file))


@pytest.fixture(scope="session")
def journey_podman(
    tmp_path_factory: pytest.TempPathFactory, journey_registry: JourneyRegistry
) -> Iterator[PodmanConfig]:
    require_tool("podman")
    require_tool("buildah")
    config = make_podman_config(tmp_path_factory.mktemp("journey-podman"), [journey_registry.host])
    yield config
    release_podman_storage(config)


@pytest.fixture(scope="session")
def notebook_image(journey_podman: PodmanConfig, journey_registry: JourneyRegistry) -> str:
    """``127.0.0.1:PORT/platform/notebook@sha256:...``, built from images/notebook."""
    return push_notebook_image(journey_podman, journey_registry.platform)


def render_lab(registry_host: str, notebook: str, profile_config: str) -> list[dict[str, Any]]:
    return render_profile_stack(
        job_registry=f"{registry_host}/kubeflow",
        notebook_image=notebook,
        profile_docker_config=profile_config,
    )


@pytest.fixture(scope="session")
def lab_objects(journey_registry: JourneyRegistry, notebook_image: str) -> list[dict[str, Any]]:
    """What the stack applies, for a stack pointed at this machine's registry."""
    return render_lab(
        journey_registry.host, notebook_image, docker_config(journey_registry.host, *PROFILE_USER)
    )


@pytest.fixture(scope="session")
def notebook_on_node(
    journey_podman: PodmanConfig, notebook_image: str, lab_objects: list[dict[str, Any]]
) -> str:
    """The notebook image, pulled as the node pulls it: with the profile's pull secret."""
    pod = {"spec": {"serviceAccountName": "default-editor"}, "metadata": {}}
    sources = PodSources(
        secrets=in_namespace(lab_objects, "Secret", PROFILE),
        service_accounts=in_namespace(lab_objects, "ServiceAccount", PROFILE),
    )
    auth = pull_auth_file(pod, sources, journey_podman.root / "lab-pull-auth.json")
    failed = pull_if_not_present(journey_podman, notebook_image, auth)
    assert failed is None, failed
    return notebook_image


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The notebook's workspace volume (its home folder), kept across the module's runs as a
    PersistentVolumeClaim is; owned by the notebook user, as the notebook's fsGroup makes it."""
    folder = tmp_path_factory.mktemp("workspace")
    folder.chmod(0o775)
    os.chown(folder, 1000, 0)
    return folder
