"""The one-call API: ``Job(...).run(train, lr=0.1)`` builds, pushes, runs and returns.

A ``Job`` is a frozen, validated description of where and how to run; it holds no state
between calls. Its pieces (packaging, builder, deployer) are the library's own modules:

    fnjob.image.package -> fnjob.image.builders (build + push) -> fnjob.run.job / fnjob.run.local

Output of the user's function goes to ``on_log`` (default: this process's stdout, since it
is the function's own output); progress goes to an optional ``Reporter`` (the CLI's is rich).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, InitVar, dataclass, field
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from fnjob.image.builders import BUILDER_TYPES, Builder, BuiltImage
from fnjob.image.package import CodePackage, package_function
from fnjob.options import (
    Build,
    Resources,
    Scheduling,
    check_pieces,
    default_timeout,
    frozen_str_mapping,
)
from fnjob.progress import ProgressEvent
from fnjob.run import Deployer
from fnjob.run.gpugroups import gpu_groups_from_environment
from fnjob.run.job import JobDeployer
from fnjob.run.local import LocalDeployer, LocalOptions
from fnjob.run.local_ranks import LocalRanksDeployer
from fnjob.run.manifest import (
    DEFAULT_RESOURCES,
    DEFAULT_SCHEDULING,
    JobOptions,
    RunSettings,
    build_job_manifest,
)
from fnjob.run.manifest_ranks import build_headless_service, build_indexed_job, build_train_job
from fnjob.run.protocol import encode_call
from fnjob.run.ranks import check_nodes, nproc_per_node, training_runtime_from_environment
from fnjob.run.ranks_job import RanksJobDeployer

DEPLOYERS = ("job", "local")
# Defaults for ``registry`` / ``base_image`` (a Kubeflow notebook of this stack sets both).
REGISTRY_ENV = "FNJOB_REGISTRY"
BASE_IMAGE_ENV = "FNJOB_BASE_IMAGE"
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


# Keyword shorthands of Job for the two pieces people size and place jobs with:
# Job(gpus=1, gpu_group="gpu-spot") is Job(resources=Resources(gpus=1),
# scheduling=Scheduling(gpu_group="gpu-spot")).
RESOURCE_SHORTHANDS = ("cpu", "memory", "gpus")
SCHEDULING_SHORTHANDS = ("gpu_group", "gpu_tolerations", "gpu_node_selector")

_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)


@dataclass(frozen=True)
class Job(RunSettings):
    """Where and how to run a function.

    What to build:

    - ``base_image``: an image with Python (same major.minor as here when the function has
      to be pickled: lambdas, notebook or ``__main__`` functions); default
      ``$FNJOB_BASE_IMAGE``;
    - ``registry``: where the built image goes, ``host[:port][/path]``, default
      ``$FNJOB_REGISTRY``; ``image_name`` is the repository under it;
    - ``building``: ``Build(builder=..., requirements=..., extra_files=..., base_python=...,
      platform=..., registry_timeout=..., ...)``, how the image is made and pushed.

    How to run it (the ``RunSettings`` a Kubernetes run's ``JobOptions`` share, keyword
    only; each piece validates itself, see ``fnjob.options``):

    - ``deployer``: ``"job"`` (Kubernetes Job) or ``"local"`` (podman/docker here);
    - ``resources``: ``Resources(cpu=..., memory=..., gpus=...)``; ``memory`` as a number is
      GiB;
    - ``scheduling``: ``Scheduling(gpu_group=..., node_selector=..., tolerations=...)``;
      GPU groups come from ``gpu_groups`` (default: the file ``$FNJOB_GPU_GROUPS`` names);
    - ``security``: ``Security(service_account=..., run_as_user=..., ...)``;
    - ``volumes``: ``Volumes(claims=(ClaimMount(...),), shm_size="2Gi")``;
    - ``env`` (plain values) and ``secret_env`` (``SecretEnv``: values from Secrets);
    - ``namespace``: default the current one (the notebook's own namespace in Kubeflow);
    - ``timeout``: seconds before the run is stopped (Job ``activeDeadlineSeconds``; a
      local podman container's ``--timeout``); None: ``$FNJOB_DEFAULT_TIMEOUT`` (seconds, or
      ``none`` for no deadline), else 24 h, so a run whose caller is gone ends by itself;
    - ``keep_job``: leave a successful Job for inspection (failed ones are always deleted;
      ``lifecycle.ttl_seconds_after_finished`` removes kept ones eventually);
    - ``lifecycle``: retries, clean-up and wait bounds (``Lifecycle``).

    Distributed (see docs/distributed-training.md):

    - ``nodes``: run the function once per process on this many pods (containers locally),
      ``max(gpus, 1)`` processes each, under torch.distributed's conventions (``RANK``,
      ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in the environment);
      rank 0's value comes back, and the first rank to fail raises ``RankFailed``;
    - ``training_runtime``: with ``nodes > 1`` on a cluster, the ClusterTrainingRuntime of a
      Trainer TrainJob (default ``$FNJOB_TRAINING_RUNTIME``, which the stack sets when it
      deploys Trainer); None: an indexed Job with a headless Service.

    Shorthands (keyword only): ``cpu``, ``memory``, ``gpus`` build ``resources`` and
    ``gpu_group``, ``gpu_tolerations``, ``gpu_node_selector`` build ``scheduling``, so
    ``Job(gpus=1, gpu_group="gpu-spot")`` is ``Job(resources=Resources(gpus=1),
    scheduling=Scheduling(gpu_group="gpu-spot"))``. A shorthand and the piece it builds cannot
    both be given (``ValueError`` naming both). They are arguments, not attributes: the
    values live in the pieces (``job.resources.gpus``).
    """

    base_image: str | None = None
    registry: str | None = None
    image_name: str = "fnjob"
    building: Build = field(default_factory=Build)
    deployer: str = "job"
    nodes: int = 1
    training_runtime: str | None = None
    # Local deployer only: "podman"/"docker" (None: podman, else docker) and extra
    # environment for the engine itself (e.g. CONTAINERS_CONF).
    engine: str | None = None
    engine_env: Mapping[str, str] = field(default_factory=dict)
    # Not part of the description: where things go, and how to reach the cluster.
    on_log: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    # The function's stderr lines, where the deployer can tell them apart (local deployer;
    # Kubernetes logs merge both streams). None: with the rest, to on_log.
    on_stderr: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    reporter: Reporter | None = field(default=None, compare=False, repr=False)
    # Without a reporter: None shows progress in a Jupyter notebook (a widget) unless
    # $FNJOB_PROGRESS is "off"; False never.
    progress: bool | None = field(default=None, compare=False, repr=False)
    api_client: Any = field(default=None, compare=False, repr=False)
    # The shorthands (see the docstring): arguments of __init__ only, never attributes.
    _: KW_ONLY
    cpu: InitVar[str | float | int | None] = None
    memory: InitVar[str | float | int | None] = None
    gpus: InitVar[int | None] = None
    gpu_group: InitVar[str | None] = None
    gpu_tolerations: InitVar[Sequence[Mapping[str, Any]] | None] = None
    gpu_node_selector: InitVar[Mapping[str, str] | None] = None

    def __post_init__(
        self,
        cpu: str | float | int | None,
        memory: str | float | int | None,
        gpus: int | None,
        gpu_group: str | None,
        gpu_tolerations: Sequence[Mapping[str, Any]] | None,
        gpu_node_selector: Mapping[str, str] | None,
    ) -> None:
        resources = _piece_from_shorthands(
            "resources",
            self.resources,
            DEFAULT_RESOURCES,
            Resources,
            {"cpu": cpu, "memory": memory, "gpus": gpus},
        )
        object.__setattr__(self, "resources", resources)
        scheduling = _piece_from_shorthands(
            "scheduling",
            self.scheduling,
            DEFAULT_SCHEDULING,
            Scheduling,
            {
                "gpu_group": gpu_group,
                "gpu_tolerations": gpu_tolerations,
                "gpu_node_selector": gpu_node_selector,
            },
        )
        object.__setattr__(self, "scheduling", scheduling)
        # Inside an fnjob image, the module defining a decorated function is imported again:
        # the description is never used there, and the notebook's environment (registry,
        # GPU groups file) is not there to complete it.
        inside_image = bool(os.environ.get(_INSIDE_IMAGE_ENV))
        base_image = self.base_image or os.environ.get(BASE_IMAGE_ENV, "").strip() or None
        if inside_image and (base_image is None or self.registry is None):
            return
        if not isinstance(base_image, str) or not base_image.strip():
            raise ValueError(
                f"base_image={self.base_image!r}: name an image with Python "
                f"(base_image=... or ${BASE_IMAGE_ENV})"
            )
        object.__setattr__(self, "base_image", base_image.strip())
        registry = self.registry or os.environ.get(REGISTRY_ENV, "").strip() or None
        if not isinstance(registry, str) or not registry.strip("/ "):
            raise ValueError(
                f"registry={self.registry!r} must be host[:port][/path] (registry=... or "
                f"${REGISTRY_ENV}), e.g. 123456789012.dkr.ecr.us-west-2.amazonaws.com/ml or "
                "127.0.0.1:5000"
            )
        object.__setattr__(self, "registry", registry.strip().rstrip("/"))
        if not isinstance(self.image_name, str) or not _REPOSITORY.fullmatch(self.image_name):
            raise ValueError(
                f"image_name={self.image_name!r} is not a repository name "
                "(lowercase letters, digits, '.', '_', '-', '/')"
            )
        if self.deployer not in DEPLOYERS:
            raise ValueError(f"deployer={self.deployer!r} is not one of {DEPLOYERS}")
        check_pieces(self, building=Build)
        self._check_run_settings()
        self._check_nodes()
        if self.timeout is None:
            object.__setattr__(self, "timeout", default_timeout())
        object.__setattr__(self, "engine_env", frozen_str_mapping("engine_env", self.engine_env))
        if inside_image:
            return
        if self.deployer == "job" and self.gpu_groups is None and self.resources.gpus > 0:
            object.__setattr__(self, "gpu_groups", gpu_groups_from_environment())
        # Build the deployer options and the builder now, so every bad value fails at
        # construction.
        self._deployer_options()
        self._builder()

    def _check_nodes(self) -> None:
        runtime = self.training_runtime
        if runtime is None and self.deployer == "job" and self.nodes != 1:
            runtime = training_runtime_from_environment()
            object.__setattr__(self, "training_runtime", runtime)
        check_nodes(
            self.nodes,
            deployer=self.deployer,
            backoff_limit=self.lifecycle.backoff_limit,
            istio_sidecar=self.lifecycle.istio_sidecar,
            training_runtime=runtime,
            keep_job=self.keep_job,
            secret_env_secrets=self.secret_env.secrets,
        )

    # -- the pieces ------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """The repository the image is pushed to (the tag comes from the image digest)."""
        return f"{self.registry}/{self.image_name}"

    def _deployer_options(self) -> JobOptions | LocalOptions:
        if self.deployer == "local":
            if self.secret_env:
                raise ValueError(
                    "secret_env: Kubernetes Secrets need the Kubernetes deployer "
                    "(deployer='job'); locally, pass the values in env"
                )
            return LocalOptions(
                engine=self.engine,
                engine_env=self.engine_env,
                env=self.env,
                resources=self.resources,
                volumes=self.volumes,
                security=self.security,
                timeout_seconds=self.timeout,
            )
        return JobOptions(**self.run_settings())

    def job_manifest(self, image: str, *, function_name: str = "function") -> dict[str, Any]:
        """The batch/v1 Job this description submits for ``image``, to review (as with
        ``kubectl --dry-run``); the run id and the Secret's name are a placeholder run's.
        The namespace is ``namespace`` or ``"default"``."""
        options = self._deployer_options()
        if not isinstance(options, JobOptions):
            raise ValueError("job_manifest needs deployer='job'")
        return build_job_manifest(
            image=image,
            function_name=function_name,
            run_id="000000000000",
            namespace=self.namespace or "default",
            options=options,
        )

    def distributed_manifests(
        self, image: str, *, function_name: str = "function"
    ) -> list[dict[str, Any]]:
        """The objects a ``nodes > 1`` cluster run of ``image`` is made of, to review: a
        TrainJob on ``training_runtime``, or without one an indexed Job and its headless
        Service (the Service's owner uid is a placeholder's). Run id as ``job_manifest``."""
        if self.nodes < 2:
            raise ValueError(f"distributed_manifests needs nodes > 1, not nodes={self.nodes}")
        run_id = "000000000000"
        job = self.job_manifest(image, function_name=function_name)
        nproc = nproc_per_node(self.resources.gpus)
        timeout = self.lifecycle.rendezvous_timeout
        if self.training_runtime is not None:
            train_job = build_train_job(
                job,
                run_id=run_id,
                runtime=self.training_runtime,
                nodes=self.nodes,
                nproc=nproc,
                rendezvous_timeout=timeout,
            )
            return [train_job]
        indexed = build_indexed_job(
            job, run_id=run_id, nodes=self.nodes, nproc=nproc, rendezvous_timeout=timeout
        )
        return [indexed, build_headless_service(indexed, run_id=run_id, job_uid="placeholder")]

    def _reporter(self) -> Reporter | None:
        """``reporter``, else the notebook's default one (see ``progress``)."""
        if self.reporter is not None or self.progress is False:
            return self.reporter
        from fnjob.report import notebook_reporter

        return notebook_reporter()

    def _builder(self, reporter: Reporter | None = None) -> Builder:
        progress = reporter.progress if reporter else None
        building = self.building
        common: dict[str, Any] = {
            "base_image": self.base_image,
            "platform": building.platform,
            "insecure_registries": building.insecure_registries,
            "credentials": building.credentials,
            "cache_dir": building.cache_dir,
            "base_python": building.base_python,
            "registry_timeout": building.registry_timeout,
            "progress": progress,
        }
        return BUILDER_TYPES[building.builder](**common)

    def _deployer(self) -> Deployer:
        options = self._deployer_options()
        if isinstance(options, LocalOptions):
            if self.nodes > 1:
                return LocalRanksDeployer(
                    options, nodes=self.nodes, rendezvous_timeout=self.lifecycle.rendezvous_timeout
                )
            return LocalDeployer(options)
        if self.nodes > 1:
            return RanksJobDeployer(
                options,
                nodes=self.nodes,
                rendezvous_timeout=self.lifecycle.rendezvous_timeout,
                training_runtime=self.training_runtime,
                api_client=self.api_client,
            )
        return JobDeployer(options, api_client=self.api_client)

    # -- public operations -----------------------------------------------------------------

    def package(self, func: Callable[..., Any]) -> CodePackage:
        """The code package for ``func`` (source when importable, else pickled)."""
        return package_function(
            func, extra_files=self.building.extra_files, requirements=self.building.requirements
        )

    def build(self, func: Callable[..., Any]) -> BuiltImage:
        """Build and push the image for ``func``; returns its digest-pinned reference.

        Raises ``UnshippableFunction``, ``PythonVersionMismatch`` (before anything is
        pushed), ``BaseImageNotFound``, ``AuthError``, ``RegistryError``.
        """
        return self.build_package(self.package(func))

    def build_package(self, package: CodePackage) -> BuiltImage:
        """Build and push an already packaged function, file or notebook."""
        reporter = self._reporter()
        showing = reporter if isinstance(reporter, contextlib.AbstractContextManager) else None
        with showing or contextlib.nullcontext():
            return self._builder(reporter).build(package, self.target)

    def run(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``func(*args, **kwargs)`` remotely and return its value.

        Streams the function's output live to ``on_log``. Raises the function's own
        exception (same type, remote traceback attached) or ``RemoteError``;
        ``ResultNotLoadable`` when the value's type is not importable here; ``JobFailed`` /
        ``JobTimeout`` / ``PodNotCreated`` when the run dies without an outcome;
        ``ClusterError`` (``ClusterUnreachable``...), ``ContainerEngineError`` and the build
        errors of ``build``.
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

    def run_image(self, image: str, call: bytes, *, function_name: str) -> Any:
        """Run a built image with an encoded call (``fnjob.run.protocol.encode_call``)."""
        reporter = self._reporter()
        status = reporter.status if reporter else None
        return self._deployer().run(
            image,
            call,
            function_name=function_name,
            on_log=self.on_log or print_log_line,
            on_status=status,
            on_stderr=self.on_stderr,
        )

    def remote(self, func: Callable[P, R]) -> RemoteFunction[P, R]:
        """Decorator: calling the result runs ``func`` with this Job and returns its value."""
        return RemoteFunction(func, self)


PieceT = TypeVar("PieceT", Resources, Scheduling)


def _piece_from_shorthands(
    name: str, piece: PieceT, unset: PieceT, kind: type[PieceT], shorthands: Mapping[str, Any]
) -> PieceT:
    """``piece``, or the piece the given shorthands describe; both given is an error."""
    given = {key: value for key, value in shorthands.items() if value is not None}
    if not given:
        return piece
    spelled = ", ".join(f"{key}={value!r}" for key, value in given.items())
    if piece is not unset:
        raise ValueError(
            f"{spelled} and {name}={piece!r} both describe the job's {name}; give one of "
            f"them ({spelled} is short for {name}={kind.__name__}({spelled}))"
        )
    return kind(**given)


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
    """Decorator factory: ``@job(gpus=1)`` or ``@job(resources=Resources(gpus=1), ...)``
    over a function; takes what ``Job`` takes."""
    description = Job(**settings)
    return description.remote


def _function_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", "") or type(func).__name__
    return "function" if name == "<lambda>" else name
