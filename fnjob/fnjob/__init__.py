"""fnjob: run a Python function as a Kubernetes Job (or in a local container), get its value.

    from fnjob import Job
    result = Job(base_image="python:3.11-slim", registry="123.dkr.ecr.us-west-2.amazonaws.com/ml",
                 gpus=1, memory="8Gi").run(train, lr=0.1)

Three ways to call it: ``Job(...).run(func, ...)``, the decorator (``@job(...)`` or
``Job(...).remote``), and the Fairing-compatible facade (``fnjob.fairing``); plus the
``fnjob`` command line. Every error raised on purpose is an ``FnJobError``.
"""

from fnjob.api import BUILDERS, DEPLOYERS, Job, RemoteFunction, Reporter, job
from fnjob.auth import AuthError, Credentials
from fnjob.build import (
    AppendBuilder,
    BaseImageNotFound,
    BuiltImage,
    DockerBuilder,
    DockerBuildFailed,
    DockerDaemonUnavailable,
)
from fnjob.deploy_job import (
    ClusterAccessDenied,
    ClusterConfigError,
    ClusterError,
    JobDeployer,
    JobFailed,
    JobOptions,
    JobTimeout,
)
from fnjob.deploy_local import (
    ContainerEngineError,
    ContainerEngineNotFound,
    LocalDeployer,
    LocalOptions,
)
from fnjob.errors import FnJobError
from fnjob.image import ImageFormatError
from fnjob.package import CodePackage, UnshippableFunction
from fnjob.progress import ProgressEvent
from fnjob.protocol import CallNotEncodable, RemoteError, ResultMissing
from fnjob.pythonversion import PythonVersionMismatch
from fnjob.registry import RegistryError, RegistryServerError, RegistryUnreachable, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "BUILDERS",
    "DEPLOYERS",
    "AppendBuilder",
    "AuthError",
    "BaseImageNotFound",
    "BuiltImage",
    "CallNotEncodable",
    "ClusterAccessDenied",
    "ClusterConfigError",
    "ClusterError",
    "CodePackage",
    "ContainerEngineError",
    "ContainerEngineNotFound",
    "Credentials",
    "DockerBuildFailed",
    "DockerBuilder",
    "DockerDaemonUnavailable",
    "FnJobError",
    "ImageFormatError",
    "Job",
    "JobDeployer",
    "JobFailed",
    "JobOptions",
    "JobTimeout",
    "LocalDeployer",
    "LocalOptions",
    "ProgressEvent",
    "PythonVersionMismatch",
    "RegistryError",
    "RegistryServerError",
    "RegistryUnreachable",
    "RemoteError",
    "RemoteFunction",
    "Reporter",
    "ResultMissing",
    "RetryPolicy",
    "UnshippableFunction",
    "__version__",
    "job",
]
