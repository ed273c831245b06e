"""A Fairing-compatible facade: existing Fairing scripts run with only the import changed.

    from fnjob import fairing                      # was: from kubeflow import fairing
    from fnjob.fairing.kubernetes.utils import get_resource_mutator   # the same path works

    fairing.config.set_builder('append', image_name='fairing-job', registry=REGISTRY,
                               base_image='python:3.11-slim', push=True)
    fairing.config.set_deployer('job', pod_spec_mutators=[get_resource_mutator(cpu=0.5,
                                                                               memory=0.5)])
    remote_train = fairing.config.fn(train)
    result = remote_train()      # unlike Fairing, the return value comes back

``config`` is this module's only state: it holds the last builder, deployer and preprocessor
settings (frozen values, replaced by each ``set_*`` call) and turns them into an ``fnjob.Job``.
``registry`` and ``base_image`` default to ``$FNJOB_REGISTRY`` and ``$FNJOB_BASE_IMAGE`` (set
in Kubeflow notebooks), so ``fairing.config.fn(f)()`` may need no ``set_builder`` at all.

Preprocessors: ``'function'`` (what ``fn`` uses; ``input_files`` ship as extra files),
``'python'`` (``executable`` is run as a script by ``config.run()``, the other
``input_files`` ship with it) and ``'notebook'`` / ``'full_notebook'`` (``notebook_file``'s
cells run by ``config.run()``). A ``requirements.txt`` among ``input_files``, or
``requirements=``, is installed into the image at build time.

Fairing's ``pytorchjob`` deployer maps to a distributed run: ``set_deployer('pytorchjob',
worker_count=3)`` is ``Job(nodes=4)`` (see docs/distributed-training.md).

What Fairing had and fnjob does not (the ``cluster`` builder, ``tfjob``/``serving``
deployers, ``TrainJob``, cloud helpers, ...) raises ``FairingNotSupported`` naming what to use
instead, never ``AttributeError``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fnjob.api import BASE_IMAGE_ENV, REGISTRY_ENV, Job
from fnjob.errors import FnJobError
from fnjob.image.package import CodePackage, package_file, package_notebook
from fnjob.options import Build, Resources, Security

FAIRING_BUILDERS = ("append", "docker")
FAIRING_DEPLOYERS = ("job", "local", "pytorchjob")
FAIRING_PREPROCESSORS = ("function", "python", "notebook", "full_notebook")
_BUILDER_OPTIONS = (
    "image_name",
    "registry",
    "base_image",
    "push",
    "insecure_registries",
    "base_python",
)
_PREPROCESSOR_OPTIONS = {
    "function": ("input_files", "requirements"),
    "python": ("input_files", "executable", "requirements"),
    "notebook": ("notebook_file", "input_files", "requirements"),
    "full_notebook": ("notebook_file", "input_files", "requirements"),
}
# What Fairing users reach for that fnjob does not have, and what to use instead.
_ALTERNATIVES = {
    "cluster": "set_builder('append') (no daemon, no kaniko) or set_builder('docker')",
    "tfjob": "fnjob runs plain Kubernetes Jobs, or PyTorch across nodes: "
    "set_deployer('job') or set_deployer('pytorchjob', worker_count=...)",
    "serving": "serve models with KServe; fnjob only runs functions as Jobs",
    "TrainJob": "fnjob.Job(base_image=..., registry=...).run(train)",
    "PredictionEndpoint": "serve models with KServe; fnjob only runs functions as Jobs",
    "cloud": "registry credentials come from docker/podman login or ECR through boto3",
    "builders": "fairing.config.set_builder('append' | 'docker', ...)",
    "deployers": "fairing.config.set_deployer('job' | 'local', ...)",
    "preprocessors": "fairing.config.set_preprocessor('function' | 'python' | 'notebook', ...)",
    "ml_tasks": "fnjob.Job(...).run(func)",
    "notebook": "fairing.config.set_preprocessor('notebook', notebook_file=...)",
    "utils": "fnjob.fairing.kubernetes.utils.get_resource_mutator",
}
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
# Fairing's PyTorchJob deployer: one master and ``worker_count`` workers become
# ``Job(nodes=1 + worker_count)`` (torch.distributed's variables are set the same way).
_DEPLOYER_OPTIONS["pytorchjob"] = (*_DEPLOYER_OPTIONS["job"], "master_count", "worker_count")


class FairingConfigError(FnJobError):
    """The facade was used in a way fnjob cannot honour (missing builder, unknown option)."""


class FairingNotSupported(FairingConfigError):
    """A Fairing feature fnjob does not have; the message names what to use instead."""


def _not_supported(where: str, name: str) -> FairingNotSupported:
    alternative = _ALTERNATIVES.get(name)
    hint = (
        f"; use {alternative}" if alternative else " (see docs/fnjob.md, 'Migrating from Fairing')"
    )
    return FairingNotSupported(f"{where}{name} is not supported in fnjob{hint}")


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
    0.5 -> ``0.47Gi``, 8 -> ``7.45Gi``); a quantity string (``"8Gi"``) is taken as is.

    Raises ``ValueError`` for an amount that is not a quantity, ``FairingConfigError`` for
    a GPU vendor other than NVIDIA.
    """
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
    base_python: str | None = None


@dataclass(frozen=True)
class _PreprocessorSettings:
    name: str = "function"
    input_files: tuple[str, ...] = ()
    executable: str | None = None
    notebook_file: str | None = None
    requirements: tuple[str, ...] | str = ()

    def package(self) -> CodePackage:
        """The file or notebook ``config.run()`` ships (not used by ``fn``)."""
        extra = [path for path in self.input_files if path not in (self.executable,)]
        if self.name == "python":
            if not self.executable:
                raise FairingConfigError(
                    "set_preprocessor('python', executable='train.py', input_files=[...]) "
                    "needs the script to run as executable="
                )
            return package_file(self.executable, extra_files=extra, requirements=self.requirements)
        if not self.notebook_file:
            raise FairingConfigError(
                f"set_preprocessor({self.name!r}, notebook_file='train.ipynb') needs "
                "notebook_file= (fnjob cannot find the running notebook's file by itself)"
            )
        return package_notebook(
            self.notebook_file, extra_files=extra, requirements=self.requirements
        )


@dataclass(frozen=True)
class _DeployerSettings:
    name: str = "job"
    options: Mapping[str, Any] = field(default_factory=dict)


def _check_pytorchjob_counts(options: Mapping[str, Any]) -> None:
    master = options.get("master_count", 1)
    workers = options.get("worker_count", 1)
    if master != 1:
        raise FairingConfigError(
            f"master_count={master!r}: fnjob runs rank 0 on exactly one node; use "
            "master_count=1 and worker_count for the others"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise FairingConfigError(f"worker_count={workers!r} must be a whole number >= 0")


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
        self._preprocessor = _PreprocessorSettings()

    def reset(self) -> None:
        """Forget the builder, deployer and preprocessor settings."""
        self._builder = None
        self._deployer = _DeployerSettings()
        self._preprocessor = _PreprocessorSettings()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise _not_supported("fairing.config.", name)

    def set_builder(self, name: str = "append", **options: Any) -> None:
        """``set_builder('append', image_name=..., registry=..., base_image=..., push=True)``."""
        if name not in FAIRING_BUILDERS:
            raise FairingNotSupported(
                f"builder {name!r} is not supported in fnjob; use one of: "
                f"{', '.join(FAIRING_BUILDERS)}"
                + (f" ({_ALTERNATIVES[name]})" if name in _ALTERNATIVES else "")
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
            base_python=options.get("base_python"),
        )
        if "image_name" in options:
            settings = replace(settings, image_name=options["image_name"])
        self._builder = settings

    def set_deployer(self, name: str = "job", **options: Any) -> None:
        """``set_deployer('job', pod_spec_mutators=[get_resource_mutator(...)], ...)``;
        ``'local'`` runs the same image with podman/docker on this machine."""
        if name not in FAIRING_DEPLOYERS:
            raise FairingNotSupported(
                f"deployer {name!r} is not supported in fnjob; use one of: "
                f"{', '.join(FAIRING_DEPLOYERS)}"
                + (f" ({_ALTERNATIVES[name]})" if name in _ALTERNATIVES else "")
            )
        _check_options("deployer", name, options, _DEPLOYER_OPTIONS[name])
        if name == "pytorchjob":
            _check_pytorchjob_counts(options)
        for mutator in options.get("pod_spec_mutators") or ():
            if not isinstance(mutator, ResourceMutator):
                raise FairingConfigError(
                    f"pod_spec_mutators: {mutator!r} is not supported; only "
                    "get_resource_mutator(...) is (use fnjob.Job(scheduling=Scheduling(...), "
                    "volumes=Volumes(...), env=...) for the rest)"
                )
        self._deployer = _DeployerSettings(name=name, options=dict(options))

    def set_preprocessor(self, name: str = "function", **options: Any) -> None:
        """``set_preprocessor('python', executable='train.py', input_files=[...])``,
        ``set_preprocessor('notebook', notebook_file='train.ipynb')`` (both run by
        ``config.run()``), or ``'function'`` with ``input_files`` shipped next to ``fn``'s
        function. A ``requirements.txt`` in ``input_files`` (or ``requirements=``, a file or
        a list of lines) is installed into the image when it is built."""
        if name not in FAIRING_PREPROCESSORS:
            raise FairingNotSupported(
                f"preprocessor {name!r} is not supported in fnjob; use one of: "
                f"{', '.join(FAIRING_PREPROCESSORS)}"
            )
        _check_options("preprocessor", name, options, _PREPROCESSOR_OPTIONS[name])
        input_files = tuple(str(path) for path in options.get("input_files") or ())
        requirements = options.get("requirements") or ()
        found = [path for path in input_files if Path(path).name == "requirements.txt"]
        if found and not requirements:
            requirements = found[0]
        input_files = tuple(path for path in input_files if path not in found)
        self._preprocessor = _PreprocessorSettings(
            name=name,
            input_files=input_files,
            executable=options.get("executable"),
            notebook_file=options.get("notebook_file"),
            requirements=requirements if isinstance(requirements, str) else tuple(requirements),
        )

    def job(
        self,
        *,
        on_log: Callable[[str], None] | None = None,
        api_client: Any = None,
    ) -> Job:
        """The ``fnjob.Job`` these settings describe."""
        builder = self._builder or _BuilderSettings(name="append")
        # Unset here: the Job takes them from $FNJOB_REGISTRY / $FNJOB_BASE_IMAGE.
        missing = [
            env
            for given, env in (
                (builder.registry, REGISTRY_ENV),
                (builder.base_image, BASE_IMAGE_ENV),
            )
            if not given and not os.environ.get(env, "").strip()
        ]
        if missing:
            raise FairingConfigError(
                "no registry or base image: call fairing.config.set_builder('append', "
                "image_name=..., registry=..., base_image=..., push=True) first (or set "
                f"{' and '.join(missing)}, as a Kubeflow notebook of this stack does)"
            )
        preprocessor = self._preprocessor
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
        deployer = self._deployer.name
        if deployer == "pytorchjob":
            deployer = "job"
            settings["nodes"] = 1 + options.get("worker_count", 1)
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
            building=Build(
                builder=builder.name,
                insecure_registries=builder.insecure_registries,
                base_python=builder.base_python,
                extra_files=preprocessor.input_files if preprocessor.name == "function" else (),
                requirements=preprocessor.requirements,
            ),
            deployer=deployer,
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

    def run(self) -> Any:
        """Run the file or notebook named by ``set_preprocessor('python', executable=...)``
        or ``set_preprocessor('notebook', notebook_file=...)`` as a job (like Fairing's
        ``config.run()``); returns None, as a script has no return value."""
        preprocessor = self._preprocessor
        if preprocessor.name == "function":
            raise FairingConfigError(
                "config.run() runs a file or notebook: call set_preprocessor('python', "
                "executable='train.py') or set_preprocessor('notebook', "
                "notebook_file='train.ipynb') first; for a function use config.fn(func)()"
            )
        package = preprocessor.package()
        name = Path(preprocessor.executable or preprocessor.notebook_file or "script").stem
        return self.job().run_package(package, function_name=name)


def __getattr__(name: str) -> Any:
    """Fairing names fnjob does not have: a typed error naming the alternative."""
    if name.startswith("_"):
        raise AttributeError(name)
    raise _not_supported("fairing.", name)


config = FairingConfig()

__all__ = [
    "FAIRING_BUILDERS",
    "FAIRING_DEPLOYERS",
    "FAIRING_PREPROCESSORS",
    "FairingConfig",
    "FairingConfigError",
    "FairingNotSupported",
    "ResourceMutator",
    "config",
    "get_resource_mutator",
]
