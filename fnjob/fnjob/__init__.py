"""fnjob: run a Python function as a Kubernetes Job (or in a local container), get its value.

    from fnjob import Build, Job, Resources
    result = Job(base_image="python:3.11-slim", registry="123.dkr.ecr.us-west-2.amazonaws.com/ml",
                 resources=Resources(gpus=1, memory="8Gi"),
                 building=Build(requirements=["scikit-learn==1.5.2"])).run(train, lr=0.1)

Three ways to call it: ``Job(...).run(func, ...)``, the decorator (``@job(...)`` or
``Job(...).remote``), and the Fairing-compatible facade (``fnjob.fairing``); plus the
``fnjob`` command line. Every error raised on purpose is an ``FnJobError``.
"""

from fnjob.api import DEPLOYERS, Job, RemoteFunction, Reporter, job
from fnjob.auth import AuthError, Credentials
from fnjob.build import (
    AppendBuilder,
    BaseImageNotFound,
    BuiltImage,
    DockerBuilder,
    DockerBuildFailed,
    DockerDaemonUnavailable,
)
from fnjob.cluster import (
    ClusterAccessDenied,
    ClusterConfigError,
    ClusterError,
    ClusterUnreachable,
    LogStreamStalled,
)
from fnjob.deploy_job import JobDeployer
from fnjob.deploy_local import (
    ContainerEngineError,
    ContainerEngineNotFound,
    LocalDeployer,
    LocalOptions,
)
from fnjob.errors import FnJobError, JobFailed, JobTimeout, PodNotCreated
from fnjob.gpugroups import GpuGroup, GpuGroups, GpuGroupsFileError, load_gpu_groups
from fnjob.image import ImageFormatError
from fnjob.interrupts import Terminated
from fnjob.manifest import JobOptions
from fnjob.options import (
    BUILDERS,
    Build,
    ClaimMount,
    Lifecycle,
    Resources,
    Scheduling,
    SecretEnv,
    SecretKey,
    Security,
    Volumes,
)
from fnjob.package import CodePackage, UnshippableFunction
from fnjob.progress import ProgressEvent
from fnjob.protocol import (
    CallNotEncodable,
    RemoteError,
    ResultMissing,
    ResultNotLoadable,
    ResultTooLarge,
)
from fnjob.pythonversion import PythonVersionMismatch
from fnjob.registry import RegistryError, RegistryServerError, RegistryUnreachable, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "BUILDERS",
    "DEPLOYERS",
    "AppendBuilder",
    "AuthError",
    "BaseImageNotFound",
    "Build",
    "BuiltImage",
    "CallNotEncodable",
    "ClaimMount",
    "ClusterAccessDenied",
    "ClusterConfigError",
    "ClusterError",
    "ClusterUnreachable",
    "CodePackage",
    "ContainerEngineError",
    "ContainerEngineNotFound",
    "Credentials",
    "DockerBuildFailed",
    "DockerBuilder",
    "DockerDaemonUnavailable",
    "FnJobError",
    "GpuGroup",
    "GpuGroups",
    "GpuGroupsFileError",
    "ImageFormatError",
    "Job",
    "JobDeployer",
    "JobFailed",
    "JobOptions",
    "JobTimeout",
    "Lifecycle",
    "LocalDeployer",
    "LocalOptions",
    "LogStreamStalled",
    "PodNotCreated",
    "ProgressEvent",
    "PythonVersionMismatch",
    "RegistryError",
    "RegistryServerError",
    "RegistryUnreachable",
    "RemoteError",
    "RemoteFunction",
    "Reporter",
    "Resources",
    "ResultMissing",
    "ResultNotLoadable",
    "ResultTooLarge",
    "RetryPolicy",
    "Scheduling",
    "SecretEnv",
    "SecretKey",
    "Security",
    "Terminated",
    "UnshippableFunction",
    "Volumes",
    "__version__",
    "job",
    "load_gpu_groups",
]
