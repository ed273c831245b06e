"""The one-call API: ``Job(...).run(train, lr=0.1)`` builds, pushes, runs and returns.

A ``Job`` is a frozen, validated description of where and how to run; it holds no state
between calls. Its pieces (packaging, builder, deployer) are the library's own modules:

    package (fnjob.package) -> build + push (fnjob.build) -> run (deploy_job / deploy_local)

Output of the user's function goes to ``on_log`` (default: this process's stdout, since it
is the function's own output); progress goes to an optional ``Reporter`` (the CLI's is rich).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from fnjob.auth import Credentials
from fnjob.build import AppendBuilder, BuiltImage, DockerBuilder
from fnjob.deploy_job import (
    DEFAULT_GPU_NODE_SELECTOR,
    DEFAULT_GPU_TOLERATIONS,
    JobDeployer,
    JobOptions,
    cpu_quantity,
    memory_quantity,
)
from fnjob.deploy_local import LocalDeployer, LocalOptions
from fnjob.package import CodePackage, package_function
from fnjob.progress import ProgressEvent
from fnjob.protocol import encode_call

DEPLOYERS = ("job", "local")
BUILDERS = ("append", "docker")
# Set in every fnjob image; tells a decorated function it is already the remote side.
_INSIDE_IMAGE_ENV = "FNJOB_ENTRY"

P = ParamSpec("P")
R = TypeVar("R")


class Reporter(Protocol):
    """Where progress goes: build events and deployment status lines."""

    def progress(self, event: ProgressEvent) -> None: ...

    def status(self, text: str) -> None: ...


def print_log_line(line: str) -> None:
    """Default log sink: the remote function's output, as if it ran here."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)


@dataclass(frozen=True)
class Job:
    """Where and how to run a function.

    - ``base_image``: an image with Python (same major.minor as here when the function has
      to be pickled: lambdas, notebook or ``__main__`` functions);
    - ``registry``: where the built image goes, ``host[:port][/path]``; ``image_name`` is the
      repository under it;
    - ``cpu``/``memory``/``gpus``: Kubernetes quantities or numbers (cores, GiB, count);
    - ``namespace``: default the current one (the notebook's own namespace in Kubeflow);
    - ``deployer``: ``"job"`` (Kubernetes Job) or ``"local"`` (podman/docker here);
    - ``builder``: ``"append"`` (no daemon: a layer appended in the registry) or ``"docker"``;
    - ``timeout``: seconds before the run is stopped (Job ``activeDeadlineSeconds``);
    - ``keep_job``: leave a successful Job for inspection (failed ones are always deleted;
      ``ttl_seconds_after_finished`` removes kept ones eventually).
    """

    base_image: str
    registry: str
    image_name: str = "fnjob"
    cpu: str | float | int | None = None
    memory: str | float | int | None = None
    gpus: int = 0
    namespace: str | None = None
    deployer: str = "job"
    builder: str = "append"
    service_account: str | None = "default-editor"
    image_pull_secrets: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: int | None = None
    insecure_registries: tuple[str, ...] = ()
    extra_files: tuple[str, ...] = ()
    requirements: tuple[str, ...] | str = ()
    keep_job: bool = False
    backoff_limit: int = 0
    ttl_seconds_after_finished: int | None = 3600
    platform: str = "linux/amd64"
    tolerations: tuple[Mapping[str, str], ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    # Where GPU pods go: by default tolerate the nvidia.com/gpu taint and select nodes
    # labelled nvidia.com/gpu.present=true (NVIDIA device plugin / GPU feature discovery).
    gpu_tolerations: tuple[Mapping[str, str], ...] = DEFAULT_GPU_TOLERATIONS
    gpu_node_selector: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_GPU_NODE_SELECTOR)
    )
    # Local deployer only: "podman"/"docker" (None: podman, else docker) and extra
    # environment for the engine itself (e.g. CONTAINERS_CONF).
    engine: str | None = None
    engine_env: Mapping[str, str] = field(default_factory=dict)
    credentials: Mapping[str, Credentials] | None = None
    cache_dir: Path | None = None
    # Build side, passed through to the builder: the base's Python when known (skips reading
    # its layers) and how long one registry operation may wait (None: $FNJOB_REGISTRY_TIMEOUT
    # or 30 s).
    base_python: str | None = None
    registry_timeout: float | None = None
    # Not part of the description: where things go, and how to reach the cluster.
    on_log: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    # The function's stderr lines, where the deployer can tell them apart (local deployer;
    # Kubernetes logs merge both streams). None: with the rest, to on_log.
    on_stderr: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    reporter: Reporter | None = field(default=None, compare=False, repr=False)
    api_client: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.base_image, str) or not self.base_image.strip():
            raise ValueError(f"base_image={self.base_image!r} must name an image with Python")
        if not isinstance(self.registry, str) or not self.registry.strip("/"):
            raise ValueError(
                f"registry={self.registry!r} must be host[:port][/path], "
                "e.g. 123456789012.dkr.ecr.us-west-2.amazonaws.com/ml or 127.0.0.1:5000"
            )
        object.__setattr__(self, "registry", self.registry.strip().rstrip("/"))
        if not isinstance(self.image_name, str) or not _REPOSITORY.fullmatch(self.image_name):
            raise ValueError(
                f"image_name={self.image_name!r} is not a repository name "
                "(lowercase letters, digits, '.', '_', '-', '/')"
            )
        if self.deployer not in DEPLOYERS:
            raise ValueError(f"deployer={self.deployer!r} is not one of {DEPLOYERS}")
        if self.builder not in BUILDERS:
            raise ValueError(f"builder={self.builder!r} is not one of {BUILDERS}")
        if self.cpu is not None:
            object.__setattr__(self, "cpu", cpu_quantity(self.cpu))
        if self.memory is not None:
            object.__setattr__(self, "memory", memory_quantity(self.memory))
        for name in ("image_pull_secrets", "insecure_registries", "extra_files"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name}={value!r} must be a list, not a single string")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.requirements, str):
            object.__setattr__(self, "requirements", tuple(self.requirements))
        for name in ("env", "engine_env", "node_selector", "labels", "gpu_node_selector"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ValueError(f"{name}={value!r} must be a mapping of strings to strings")
            object.__setattr__(self, name, MappingProxyType(dict(value)))
        object.__setattr__(self, "tolerations", tuple(self.tolerations))
        object.__setattr__(self, "gpu_tolerations", tuple(self.gpu_tolerations))
        # Build the deployer options and the builder now, so every bad value fails at
        # construction.
        self._deployer_options()
        self._builder()

    # -- the pieces ------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """The repository the image is pushed to (the tag comes from the image digest)."""
        return f"{self.registry}/{self.image_name}"

    def _deployer_options(self) -> JobOptions | LocalOptions:
        if self.deployer == "local":
            return LocalOptions(
                engine=self.engine,
                engine_env=self.engine_env,
                env=self.env,
                cpu=self.cpu,
                memory=self.memory,
                gpus=self.gpus,
                timeout_seconds=self.timeout,
            )
        return JobOptions(
            namespace=self.namespace,
            cpu=self.cpu,
            memory=self.memory,
            gpus=self.gpus,
            service_account=self.service_account,
            image_pull_secrets=self.image_pull_secrets,
            env=self.env,
            timeout_seconds=self.timeout,
            backoff_limit=self.backoff_limit,
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            delete_on_completion=not self.keep_job,
            tolerations=self.tolerations,
            node_selector=self.node_selector,
            labels=self.labels,
            gpu_tolerations=self.gpu_tolerations,
            gpu_node_selector=self.gpu_node_selector,
        )

    def _builder(self) -> AppendBuilder | DockerBuilder:
        progress = self.reporter.progress if self.reporter else None
        common: dict[str, Any] = {
            "base_image": self.base_image,
            "platform": self.platform,
            "insecure_registries": self.insecure_registries,
            "credentials": self.credentials,
            "cache_dir": self.cache_dir,
            "base_python": self.base_python,
            "registry_timeout": self.registry_timeout,
            "progress": progress,
        }
        return AppendBuilder(**common) if self.builder == "append" else DockerBuilder(**common)

    def _deployer(self) -> JobDeployer | LocalDeployer:
        options = self._deployer_options()
        if isinstance(options, LocalOptions):
            return LocalDeployer(options)
        return JobDeployer(options, api_client=self.api_client)

    # -- public operations -----------------------------------------------------------------

    def package(self, func: Callable[..., Any]) -> CodePackage:
        """The code package for ``func`` (source when importable, else pickled)."""
        return package_function(func, extra_files=self.extra_files, requirements=self.requirements)

    def build(self, func: Callable[..., Any]) -> BuiltImage:
        """Build and push the image for ``func``; returns its digest-pinned reference.

        Raises ``UnshippableFunction``, ``PythonVersionMismatch`` (before anything is
        pushed), ``BaseImageNotFound``, ``AuthError``, ``RegistryError``.
        """
        return self.build_package(self.package(func))

    def build_package(self, package: CodePackage) -> BuiltImage:
        """Build and push an already packaged function, file or notebook."""
        return self._builder().build(package, self.target)

    def run(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``func(*args, **kwargs)`` remotely and return its value.

        Streams the function's output live to ``on_log``. Raises the function's own
        exception (same type, remote traceback attached) or ``RemoteError``; ``JobFailed``
        / ``JobTimeout`` when the run dies without an outcome; ``ClusterError``,
        ``ContainerEngineError`` and the build errors of ``build``.
        """
        call = encode_call(args, kwargs)  # fail on unpicklable arguments before building
        image = self.build(func)
        value: R = self.run_image(image.ref, call, function_name=_function_name(func))
        return value

    def run_package(
        self,
        package: CodePackage,
        *,
        function_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """Build, push and run an already packaged function (what the CLI uses)."""
        call = encode_call(args, kwargs)
        image = self.build_package(package)
        return self.run_image(image.ref, call, function_name=function_name)

    def run_image(self, image: str, call: str, *, function_name: str) -> Any:
        """Run a built image with an encoded call (``fnjob.protocol.encode_call``)."""
        status = self.reporter.status if self.reporter else None
        deployer = self._deployer()
        if isinstance(deployer, LocalDeployer) and self.on_stderr is not None:
            return deployer.run(
                image,
                call,
                function_name=function_name,
                on_log=self.on_log or print_log_line,
                on_status=status,
                on_stderr=self.on_stderr,
            )
        return deployer.run(
            image,
            call,
            function_name=function_name,
            on_log=self.on_log or print_log_line,
            on_status=status,
        )

    def remote(self, func: Callable[P, R]) -> RemoteFunction[P, R]:
        """Decorator: calling the result runs ``func`` with this Job and returns its value."""
        return RemoteFunction(func, self)


class RemoteFunction(Generic[P, R]):
    """A function that runs remotely when called; ``.local(...)`` runs it here.

    Inside an fnjob image (the remote side, where the module is imported again) calling it
    runs the function directly.
    """

    def __init__(self, func: Callable[P, R], job: Job) -> None:
        self.local = func
        self.job = job
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if os.environ.get(_INSIDE_IMAGE_ENV):
            return self.local(*args, **kwargs)
        return self.job.run(self.local, *args, **kwargs)


def job(**settings: Any) -> Callable[[Callable[P, R]], RemoteFunction[P, R]]:
    """Decorator factory: ``@job(base_image=..., registry=..., gpus=1)`` over a function."""
    description = Job(**settings)
    return description.remote


def _function_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", "") or type(func).__name__
    return "function" if name == "<lambda>" else name
