"""Real parts shared by fnjob's tests: a registry, a podman config, a Python base image.

Nothing here is faked: ``docker-registry`` (Debian's distribution 2.8) runs on 127.0.0.1, the
base image is Debian bookworm (minbase + python3) made by ``mmdebstrap`` and copied into the
registry with ``skopeo``, and containers run with ``podman`` under a private configuration.
A missing tool fails the tests (CI must not silently skip them).

The base image's OCI layout is cached across runs in ``.cache/fnjob-base`` of the checkout (or
``$FNJOB_TEST_CACHE``); building it once takes about a minute.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_CACHE = Path(os.environ.get("FNJOB_TEST_CACHE", REPO_ROOT / ".cache" / "fnjob-base"))
BASE_REPOSITORY = "fnjob-base/python"
BASE_TAG = "3.11"
# Drop documentation and translations: the base stays near 50 MiB compressed.
_MMDEBSTRAP_EXCLUDES = [
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
]


def require_tool(name: str) -> str:
    """The tool's path; fails (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required for fnjob's real-parts tests but is not on PATH")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RegistryServer:
    """A ``docker-registry serve`` process on 127.0.0.1, restartable on the same port and
    storage (to stop it in the middle of a push and look at what is left)."""

    def __init__(self, workdir: Path, *, htpasswd: Path | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.storage = workdir / "storage"
        self.config = workdir / "config.yml"
        self.log = workdir / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.storage.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
            },
            # A fixed secret keeps upload sessions valid across a restart.
            "http": {"addr": self.host, "secret": "fnjob-tests-only"},
        }
        if htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "fnjob-tests", "path": str(htpasswd)}}
        self.config.write_text(json.dumps(config))

    def start(self) -> None:
        binary = require_tool("docker-registry")
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "serve", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                pytest.fail(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                requests.get(f"{self.url}/v2/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        pytest.fail(f"docker-registry did not answer on {self.host} within 20 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def manifest(self, repository: str, reference: str) -> requests.Response:
        accept = ", ".join(
            [
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ]
        )
        return requests.get(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            headers={"Accept": accept},
            timeout=10,
        )

    def tags(self, repository: str) -> list[str]:
        response = requests.get(f"{self.url}/v2/{repository}/tags/list", timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return list(response.json().get("tags") or [])

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = requests.head(f"{self.url}/v2/{repository}/blobs/{digest}", timeout=10)
        return response.status_code == 200


@contextlib.contextmanager
def running_registry(workdir: Path, *, htpasswd: Path | None = None) -> Iterator[RegistryServer]:
    server = RegistryServer(workdir, htpasswd=htpasswd)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# The base image (an OCI layout, cached)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


@dataclass(frozen=True)
class DebianImage:
    """A one-layer Debian bookworm image made by mmdebstrap (minbase): its packages, the
    ``--customize-hook`` commands run on the finished root ("$1" is its path), extra
    mmdebstrap options, and the image config."""

    tag: str
    packages: tuple[str, ...]
    customize: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str | None = None
    workdir: str | None = None


PYTHON_BASE = DebianImage(tag=BASE_TAG, packages=("python3",))


def build_debian_layout(layout: Path, image: DebianImage) -> None:
    """mmdebstrap ``image``'s root file system and store it as a one-layer OCI image."""
    require_tool("mmdebstrap")
    work = layout.with_name(layout.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    (work / "blobs" / "sha256").mkdir(parents=True)
    rootfs = work / "rootfs.tar"
    completed = subprocess.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(image.packages)}",
            "--mode=root",
            *_MMDEBSTRAP_EXCLUDES,
            *image.options,
            *(f"--customize-hook={hook}" for hook in image.customize),
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(f"mmdebstrap failed: {completed.stderr[-3000:]}")
    diff_id = _sha256_file(rootfs)
    gz_path = work / "layer.tar.gz"
    with rootfs.open("rb") as source, gzip.GzipFile(gz_path, "wb", mtime=0) as target:
        shutil.copyfileobj(source, target, 1 << 20)
    layer_digest = _sha256_file(gz_path)
    layer_size = gz_path.stat().st_size
    gz_path.rename(work / "blobs" / "sha256" / layer_digest.split(":")[1])
    rootfs.unlink()
    image_config: dict[str, object] = {"Env": list(image.env), "Cmd": ["python3"]}
    if image.user is not None:
        image_config["User"] = image.user
    if image.workdir is not None:
        image_config["WorkingDir"] = image.workdir
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created_by": "mmdebstrap --variant=minbase "
                f"--include={','.join(image.packages)} bookworm"
            }
        ],
    }
    config_descriptor = _write_blob(work, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_descriptor},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_descriptor = _write_blob(work, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_descriptor,
                "annotations": {"org.opencontainers.image.ref.name": image.tag},
            }
        ],
    }
    (work / "index.json").write_text(json.dumps(index))
    (work / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    shutil.rmtree(layout, ignore_errors=True)
    work.rename(layout)


@contextlib.contextmanager
def locked_cache(lock_name: str = ".lock") -> Iterator[Path]:
    """The shared cache folder, locked (several pytest runs may use it at once); entries
    with their own ``lock_name`` do not wait for each other."""
    BASE_CACHE.mkdir(parents=True, exist_ok=True)
    with (BASE_CACHE / lock_name).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield BASE_CACHE


def cached_debian_layout(name: str, image: DebianImage) -> Path:
    """The cached OCI layout ``name`` of ``image`` (built on first use)."""
    with locked_cache() as cache:
        layout = cache / name
        if not (layout / "index.json").is_file():
            build_debian_layout(layout, image)
    return layout


def cached_base_layout() -> Path:
    """The cached OCI layout of the Python base image (built on first use)."""
    return cached_debian_layout("layout", PYTHON_BASE)


# The Python base with PyTorch for CPU (gloo) in /usr/local/lib/python3.11/dist-packages, for
# the distributed tests: pip installs it from the host into the new root (the host is Python
# 3.11 like bookworm's, and pip uses the machine's index configuration). About 750 MB
# unpacked, so it is built once and cached like the base.
TORCH_REQUIREMENT = "torch==2.13.0+cpu"
TORCH_BASE = DebianImage(
    tag=BASE_TAG,
    packages=("python3",),
    customize=(
        f"{sys.executable} -m pip install --quiet --no-compile --disable-pip-version-check "
        '--target "$1/usr/local/lib/python3.11/dist-packages" ' + TORCH_REQUIREMENT,
    ),
)


def cached_torch_layout() -> Path:
    """The cached OCI layout of the Python base with CPU PyTorch (built on first use)."""
    return cached_debian_layout(f"torch-{TORCH_REQUIREMENT.split('==')[1]}", TORCH_BASE)


@pytest.fixture(scope="session")
def base_layout() -> Path:
    return cached_base_layout()


def copy_base_into(
    layout: Path, registry_host: str, repository: str, *, docker_format: bool = False
) -> str:
    """Copy the base from the layout into a registry with skopeo; returns the reference."""
    skopeo = require_tool("skopeo")
    reference = f"{registry_host}/{repository}:{BASE_TAG}"
    command = [skopeo, "copy", "--quiet", "--dest-tls-verify=false"]
    if docker_format:
        command += ["--format", "v2s2"]
    command += [f"oci:{layout}:{BASE_TAG}", f"docker://{reference}"]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        pytest.fail(f"skopeo copy failed: {completed.stderr[-2000:]}")
    return reference


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """The session's registry on 127.0.0.1 (do not stop it; fault tests start their own)."""
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def python_base(registry: RegistryServer, base_layout: Path) -> str:
    """``127.0.0.1:PORT/fnjob-base/python:3.11`` (OCI media types, Python 3.11, no pip)."""
    return copy_base_into(base_layout, registry.host, BASE_REPOSITORY)


@pytest.fixture(scope="session")
def torch_base(registry: RegistryServer) -> str:
    """``127.0.0.1:PORT/fnjob-base/torch:3.11``: the Python base with CPU PyTorch."""
    return copy_base_into(cached_torch_layout(), registry.host, "fnjob-base/torch")


@pytest.fixture(scope="session")
def python_base_docker(registry: RegistryServer, base_layout: Path) -> str:
    """The same base with Docker schema 2 media types, in ``fnjob-base/python-docker``."""
    return copy_base_into(
        base_layout, registry.host, "fnjob-base/python-docker", docker_format=True
    )


# ---------------------------------------------------------------------------------------------
# podman


@dataclass(frozen=True)
class PodmanConfig:
    """Environment for podman/buildah with private config files and storage."""

    env: dict[str, str]
    root: Path

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [require_tool("podman"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def make_podman_config(root: Path, insecure_hosts: list[str]) -> PodmanConfig:
    """Private containers.conf / storage.conf / registries.conf under root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "containers.conf").write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{root / "events.log"}"\n'
        # Private exit files and locks: several podman setups may run side by side.
        f'tmp_dir = "{root / "libpod-tmp"}"\n'
        f'volume_path = "{root / "volumes"}"\n'
    )
    (root / "storage.conf").write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'runroot = "{root / "run"}"\n'
        f'graphroot = "{root / "graph"}"\n'
    )
    registries = "unqualified-search-registries = []\n"
    for host in insecure_hosts:
        registries += f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'
    (root / "registries.conf").write_text(registries)
    (root / "auth.json").write_text("{}")
    env = dict(os.environ)
    env.update(
        CONTAINERS_CONF=str(root / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(root / "storage.conf"),
        CONTAINERS_REGISTRIES_CONF=str(root / "registries.conf"),
        REGISTRY_AUTH_FILE=str(root / "auth.json"),
        TMPDIR=str(root),
    )
    return PodmanConfig(env=env, root=root)


def release_podman_storage(config: PodmanConfig) -> None:
    """Remove containers/images and the overlay mount podman keeps on its graph root, so
    pytest can delete the temporary folder."""
    config.run("system", "reset", "--force", timeout=120)
    overlay = config.root / "graph" / "overlay"
    if os.path.ismount(overlay):
        subprocess.run(["umount", str(overlay)], check=False, capture_output=True)


@pytest.fixture(scope="session")
def podman(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer
) -> Iterator[PodmanConfig]:
    """podman with a private config trusting the session registry over plain HTTP."""
    require_tool("podman")
    config = make_podman_config(tmp_path_factory.mktemp("podman"), [registry.host])
    yield config
    release_podman_storage(config)


@pytest.fixture(scope="session")
def podman_env(podman: PodmanConfig) -> dict[str, str]:
    """Environment variables for ``podman`` (private config files and storage)."""
    return podman.env


# A gpu-groups.json as the stack publishes it (version 1): one spot group with its taints.
GPU_SPOT_GROUPS = {
    "version": 1,
    "default": "gpu-spot",
    "groups": [
        {
            "name": "gpu-spot",
            "resource": "nvidia.com/gpu",
            "gpusPerNode": 1,
            "gpuModel": "NVIDIA A10G",
            "nodeSelector": {"kubeflow-eks.io/gpu-group": "gpu-spot"},
            "tolerations": [
                {"key": "capacity", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
            ],
        }
    ],
}
