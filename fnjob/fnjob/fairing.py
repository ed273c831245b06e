"""A Fairing-compatible facade: existing Fairing scripts run with only the import changed.

    from fnjob import fairing                      # was: from kubeflow import fairing
    from fnjob.fairing import get_resource_mutator # was: kubeflow.fairing.kubernetes.utils

    fairing.config.set_builder('append', image_name='fairing-job', registry=REGISTRY,
                               base_image='python:3.11-slim', push=True)
    fairing.config.set_deployer('job', pod_spec_mutators=[get_resource_mutator(cpu=0.5,
                                                                               memory=0.5)])
    remote_train = fairing.config.fn(train)
    result = remote_train()      # unlike Fairing, the return value comes back

``config`` is this module's only state: it holds the last builder and deployer settings
(frozen values, replaced by each ``set_*`` call) and turns them into an ``fnjob.Job``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fnjob.api import BASE_IMAGE_ENV, REGISTRY_ENV, Job
from fnjob.errors import FnJobError
from fnjob.options import Resources, Security

FAIRING_BUILDERS = ("append", "docker")
FAIRING_DEPLOYERS = ("job", "local")
_BUILDER_OPTIONS = ("image_name", "registry", "base_image", "push", "insecure_registries")
_DEPLOYER_OPTIONS = {
    "job": (
        "namespace",
        "pod_spec_mutators",
        "cleanup",
        "labels",
        "stream_log",
        "timeout",
        "service_account",
        "image_pull_secrets",
        "env",
    ),
    "local": ("pod_spec_mutators", "engine", "engine_env", "env", "timeout", "stream_log"),
}


class FairingConfigError(FnJobError):
    """The facade was used in a way fnjob cannot honour (missing builder, unknown option)."""


# Fairing's memory unit: GB (10**9 bytes), written to the pod as GiB.
_BYTES_PER_GB_IN_GIB = 1.073741824


@dataclass(frozen=True)
class ResourceMutator:
    """What ``get_resource_mutator`` returns: the resources it asks for (requests = limits)."""

    resources: Resources


def get_resource_mutator(
    cpu: float | str | None = None,
    memory: float | str | None = None,
    gpu: int | None = None,
    gpu_vendor: str = "nvidia",
) -> ResourceMutator:
    """Resources for the job, as Fairing's ``get_resource_mutator``: ``cpu`` in cores,
    ``memory`` in GB, turned into GiB as Fairing did (``round(memory / 1.073741824, 2)``:
    0.5 -> ``0.47Gi``, 8 -> ``7.45Gi``); a quantity string (``"8Gi"``) is taken as is."""
    if gpu_vendor != "nvidia":
        raise FairingConfigError(
            f"gpu_vendor={gpu_vendor!r} is not supported; fnjob requests nvidia.com/gpu only"
        )
    if isinstance(memory, int | float) and not isinstance(memory, bool):
        memory = f"{round(memory / _BYTES_PER_GB_IN_GIB, 2)}Gi"
    return ResourceMutator(Resources(cpu=cpu, memory=memory, gpus=gpu or 0))


@dataclass(frozen=True)
class _BuilderSettings:
    name: str
    image_name: str = "fairing-job"
    registry: str | None = None
    base_image: str | None = None
    insecure_registries: tuple[str, ...] = ()


@dataclass(frozen=True)
class _DeployerSettings:
    name: str = "job"
    options: Mapping[str, Any] = field(default_factory=dict)


def _check_options(kind: str, name: str, given: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise FairingConfigError(
            f"{kind} {name!r} does not take {', '.join(unknown)}; it takes: {', '.join(allowed)}"
        )


class FairingConfig:
    """``fairing.config``: remembers ``set_builder``/``set_deployer`` and runs functions."""

    def __init__(self) -> None:
        self._builder: _BuilderSettings | None = None
        self._deployer = _DeployerSettings()

    def reset(self) -> None:
        """Forget the builder and deployer settings."""
        self._builder = None
        self._deployer = _DeployerSettings()

    def set_builder(self, name: str = "append", **options: Any) -> None:
        """``set_builder('append', image_name=..., registry=..., base_image=..., push=True)``."""
        if name not in FAIRING_BUILDERS:
            raise FairingConfigError(
                f"builder {name!r} is not supported; use one of: {', '.join(FAIRING_BUILDERS)}"
            )
        _check_options("builder", name, options, _BUILDER_OPTIONS)
        if options.get("push", True) is not True:
            raise FairingConfigError(
                "push=False is not supported: the image is always pushed, because the job "
                "(or the local container engine) pulls it from the registry"
            )
        settings = _BuilderSettings(
            name=name,
            registry=options.get("registry"),
            base_image=options.get("base_image"),
            insecure_registries=tuple(options.get("insecure_registries", ())),
        )
        if "image_name" in options:
            settings = replace(settings, image_name=options["image_name"])
        self._builder = settings

    def set_deployer(self, name: str = "job", **options: Any) -> None:
        """``set_deployer('job', pod_spec_mutators=[get_resource_mutator(...)], ...)``;
        ``'local'`` runs the same image with podman/docker on this machine."""
        if name not in FAIRING_DEPLOYERS:
            raise FairingConfigError(
                f"deployer {name!r} is not supported; use one of: {', '.join(FAIRING_DEPLOYERS)}"
            )
        _check_options("deployer", name, options, _DEPLOYER_OPTIONS[name])
        for mutator in options.get("pod_spec_mutators") or ():
            if not isinstance(mutator, ResourceMutator):
                raise FairingConfigError(
                    f"pod_spec_mutators: {mutator!r} is not supported; only "
                    "get_resource_mutator(...) is (use fnjob.Job(scheduling=Scheduling(...), "
                    "volumes=Volumes(...), env=...) for the rest)"
                )
        self._deployer = _DeployerSettings(name=name, options=dict(options))

    def job(
        self,
        *,
        on_log: Callable[[str], None] | None = None,
        api_client: Any = None,
    ) -> Job:
        """The ``fnjob.Job`` these settings describe."""
        builder = self._builder
        if builder is None:
            if not (os.environ.get(REGISTRY_ENV) and os.environ.get(BASE_IMAGE_ENV)):
                raise FairingConfigError(
                    "no builder set: call fairing.config.set_builder('append', image_name=..., "
                    f"registry=..., base_image=..., push=True) first (or set {REGISTRY_ENV} "
                    f"and {BASE_IMAGE_ENV}, as a Kubeflow notebook of this stack does)"
                )
            builder = _BuilderSettings(name="append")
        options = self._deployer.options
        cpu = memory = None
        gpus = 0
        for mutator in options.get("pod_spec_mutators") or ():
            # Like Fairing, a later mutator replaces what an earlier one set.
            cpu = mutator.resources.cpu if mutator.resources.cpu is not None else cpu
            memory = mutator.resources.memory if mutator.resources.memory is not None else memory
            gpus = mutator.resources.gpus or gpus
        settings: dict[str, Any] = {
            key: options[key]
            for key in (
                "namespace",
                "timeout",
                "env",
                "engine",
                "engine_env",
                "labels",
            )
            if key in options
        }
        if "cleanup" in options:
            settings["keep_job"] = not options["cleanup"]
        identity = {
            key: options[key] for key in ("service_account", "image_pull_secrets") if key in options
        }
        if identity:
            settings["security"] = Security(**identity)
        if options.get("stream_log", True) is False:
            on_log = on_log or (lambda _line: None)
        return Job(
            base_image=builder.base_image,
            registry=builder.registry,
            image_name=builder.image_name,
            builder=builder.name,
            insecure_registries=builder.insecure_registries,
            deployer=self._deployer.name,
            resources=Resources(cpu=cpu, memory=memory, gpus=gpus),
            on_log=on_log,
            api_client=api_client,
            **settings,
        )

    def fn(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """A callable that runs ``func`` remotely with the current settings and returns its
        value. The settings are read when it is called, like Fairing."""

        @functools.wraps(func)
        def run_remotely(*args: Any, **kwargs: Any) -> Any:
            return self.job().run(func, *args, **kwargs)

        return run_remotely


config = FairingConfig()

__all__ = [
    "FAIRING_BUILDERS",
    "FAIRING_DEPLOYERS",
    "FairingConfig",
    "FairingConfigError",
    "ResourceMutator",
    "config",
    "get_resource_mutator",
]
