"""Run a Kubernetes pod spec's container with podman, as a kubelet would on a node.

``podman_options`` translates what the journey's pods use: plain env values; ConfigMap and
Secret volumes written as files (all keys, or ``items`` renamed to their paths, with the
volume's ``defaultMode``), bind-mounted at their ``mountPath`` (with ``subPath``: that one
file), read-only when asked; PersistentVolumeClaims as host folders; the pod's name as host
name; the container's hardening (dropped capabilities, no privilege escalation,
``runAsUser``). Anything else in a pod spec (env from Secrets, projected volumes, ...) is an
error naming it, never silently left out. Networking, resources and scheduling are not a
kubelet's file work: the caller picks the network, and the Job's resources and placement are
asserted on the submitted object.

``pull_auth_file`` is the kubelet's image pull: the docker configs of the pod's
``imagePullSecrets`` and its service account's, as one auth file for ``podman pull``.
``PodmanKubelet`` runs the Job pods of ``tests.fnjob.fake_kube_api`` that way.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fnjob.conftest import PodmanConfig

_SECRET_DEFAULT_MODE = 0o644


@dataclass(frozen=True)
class PodSources:
    """What a pod's volumes and pull secrets come from: the namespace's ConfigMaps, Secrets
    and ServiceAccounts as the API holds them (by name), and a host folder per claim."""

    config_maps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    service_accounts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    claims: Mapping[str, Path] = field(default_factory=dict)


def _volume_files(volume: Mapping[str, Any], sources: PodSources) -> tuple[dict[str, bytes], int]:
    """The files of a ConfigMap or Secret volume (path -> bytes) and their mode."""
    if "configMap" in volume:
        source = volume["configMap"]
        data = {k: v.encode() for k, v in (sources.config_maps[source["name"]]["data"]).items()}
    elif "secret" in volume:
        source = volume["secret"]
        secret = sources.secrets[source["secretName"]]
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    else:
        raise ValueError(f"volume {volume['name']}: only configMap and secret have files")
    items = source.get("items")
    files = {item["path"]: data[item["key"]] for item in items} if items else data
    return files, int(source.get("defaultMode", _SECRET_DEFAULT_MODE))


def _volume_source(volume: Mapping[str, Any], sources: PodSources, scratch: Path) -> Path:
    """The host folder holding ``volume``'s files."""
    if "persistentVolumeClaim" in volume:
        return sources.claims[volume["persistentVolumeClaim"]["claimName"]]
    if not ({"configMap", "secret"} & set(volume)):
        kinds = sorted(set(volume) - {"name"})
        raise ValueError(f"volume {volume['name']}: {kinds} is not translated to podman")
    folder = scratch / "volumes" / volume["name"]
    folder.mkdir(parents=True)
    files, mode = _volume_files(volume, sources)
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)
    return folder


def _env_options(container: Mapping[str, Any]) -> list[str]:
    options = []
    for item in container.get("env") or []:
        if "value" not in item:
            raise ValueError(f"env {item['name']}: only plain values are translated to podman")
        options += ["--env", f"{item['name']}={item['value']}"]
    if container.get("envFrom"):
        raise ValueError("envFrom is not translated to podman")
    return options


def _security_options(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    options = []
    context = container.get("securityContext") or {}
    if context.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    for capability in (context.get("capabilities") or {}).get("drop") or []:
        options += ["--cap-drop", capability.lower()]
    user = context.get("runAsUser", (pod_spec.get("securityContext") or {}).get("runAsUser"))
    if user is not None:
        options += ["--user", str(user)]
    return options


def podman_options(
    pod: Mapping[str, Any], sources: PodSources, scratch: Path, *, container_index: int = 0
) -> list[str]:
    """``podman run`` options for one container of ``pod`` (its files go under ``scratch``)."""
    spec = pod["spec"]
    container = spec["containers"][container_index]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    options = ["--hostname", pod["metadata"]["name"]]
    options += _env_options(container)
    options += _security_options(spec, container)
    folders: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        name = mount["name"]
        if name not in folders:
            folders[name] = _volume_source(volumes[name], sources, scratch)
        host = folders[name] / mount["subPath"] if "subPath" in mount else folders[name]
        flags = "ro" if mount.get("readOnly") else "rw"
        options += ["--volume", f"{host}:{mount['mountPath']}:{flags}"]
    return options


def pull_auth_file(pod: Mapping[str, Any], sources: PodSources, path: Path) -> Path:
    """One auth file with every registry of the pod's pull secrets (its own, then its
    service account's, as the kubelet tries them)."""
    spec = pod["spec"]
    account = sources.service_accounts.get(spec.get("serviceAccountName", "default"), {})
    names = [s["name"] for s in spec.get("imagePullSecrets") or []]
    names += [s["name"] for s in account.get("imagePullSecrets") or []]
    auths: dict[str, Any] = {}
    for name in names:
        secret = sources.secrets[name]
        config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
        for host, entry in config.get("auths", {}).items():
            auths.setdefault(host, entry)
    path.write_text(json.dumps({"auths": auths}))
    return path


def pull_if_not_present(podman: PodmanConfig, image: str, auth_file: Path) -> str | None:
    """The kubelet's pull for ``imagePullPolicy: IfNotPresent`` (the default for an image
    pinned by digest): nothing when the node has the image. Returns the error, if any."""
    if podman.run("image", "exists", image).returncode == 0:
        return None
    pulled = podman.run("pull", "--quiet", "--authfile", str(auth_file), image)
    return pulled.stderr.strip() or "podman pull failed" if pulled.returncode != 0 else None


@dataclass(frozen=True)
class PodRun:
    """One pod the kubelet ran: its name, its image and the ``podman run`` options."""

    pod_name: str
    image: str
    options: tuple[str, ...]
    exit_code: int


@dataclass
class PodmanKubelet:
    """Runs the Job pods of the fake Kubernetes API with podman: the image pulled with the
    pod's pull secrets, its volumes from the namespace's objects, no network."""

    podman: PodmanConfig
    namespace_objects: PodSources
    scratch: Path
    runs: list[PodRun] = field(default_factory=list)

    def __call__(
        self, job: dict[str, Any], pod_name: str, api_secrets: Mapping[str, dict[str, Any]]
    ) -> tuple[list[str], int]:
        pod = {
            "metadata": {"name": pod_name, "namespace": job["metadata"]["namespace"]},
            "spec": job["spec"]["template"]["spec"],
        }
        sources = self.namespace_objects
        sources = PodSources(
            config_maps=sources.config_maps,
            secrets={**sources.secrets, **api_secrets},
            service_accounts=sources.service_accounts,
            claims=sources.claims,
        )
        scratch = self.scratch / pod_name
        scratch.mkdir(parents=True)
        image = pod["spec"]["containers"][0]["image"]
        auth = pull_auth_file(pod, sources, scratch / "pull-auth.json")
        pulled = pull_if_not_present(self.podman, image, auth)
        if pulled is not None:
            self.runs.append(PodRun(pod_name, image, (), 1))
            return [f"Failed to pull image {image}: {pulled}"], 1
        options = podman_options(pod, sources, scratch)
        completed = subprocess.run(
            [
                "podman",
                "run",
                "--rm",
                "--pull",
                "never",
                "--network",
                "none",
                *options,
                image,
            ],
            env=self.podman.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
            check=False,
        )
        self.runs.append(PodRun(pod_name, image, tuple(options), completed.returncode))
        lines = completed.stdout.split("\n")
        if completed.stdout.endswith("\n"):
            lines.pop()
        return lines, completed.returncode


def run_in_container(
    podman: PodmanConfig, image: str, options: Sequence[str], command: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """``podman run --rm`` of an image already pulled, stdout and stderr kept apart."""
    return subprocess.run(
        ["podman", "run", "--rm", "--pull", "never", *options, image, *command],
        env=podman.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
