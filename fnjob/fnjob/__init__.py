"""fnjob: run a Python function as a Kubernetes Job (or in a local container), get its value.

    from fnjob import Build, Job, Resources
    result = Job(base_image="python:3.11-slim", registry="123.dkr.ecr.us-west-2.amazonaws.com/ml",
                 resources=Resources(gpus=1, memory="8Gi"),
                 building=Build(requirements=["scikit-learn==1.5.2"])).run(train, lr=0.1)

Three ways to call it: ``Job(...).run(func, ...)``, the decorator (``@job(...)`` or
``Job(...).remote``), and the Fairing-compatible facade (``fnjob.fairing``); plus the
``fnjob`` command line. Every error raised on purpose is an ``FnJobError``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fnjob.api import DEPLOYERS, Job, RemoteFunction, Reporter, job
    from fnjob.errors import FnJobError, JobFailed, JobTimeout, PodNotCreated
    from fnjob.image.auth import AuthError, Credentials
    from fnjob.image.builders import (
        AppendBuilder,
        BaseImageNotFound,
        BuiltImage,
        DockerBuilder,
        DockerBuildFailed,
        DockerDaemonUnavailable,
    )
    from fnjob.image.layer import ImageFormatError
    from fnjob.image.package import CodePackage, UnshippableFunction
    from fnjob.image.pythonversion import PythonVersionMismatch
    from fnjob.image.registry import (
        RegistryError,
        RegistryServerError,
        RegistryUnreachable,
        RetryPolicy,
    )
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
    from fnjob.progress import ProgressEvent
    from fnjob.run.cluster import (
        ClusterAccessDenied,
        ClusterConfigError,
        ClusterError,
        ClusterUnreachable,
        LogStreamStalled,
    )
    from fnjob.run.gpugroups import GpuGroup, GpuGroups, GpuGroupsFileError, load_gpu_groups
    from fnjob.run.interrupts import Terminated
    from fnjob.run.job import JobDeployer
    from fnjob.run.local import (
        ContainerEngineError,
        ContainerEngineNotFound,
        LocalDeployer,
        LocalOptions,
    )
    from fnjob.run.manifest import JobOptions
    from fnjob.run.protocol import (
        CallNotEncodable,
        RankFailed,
        RemoteError,
        RendezvousTimeout,
        ResultMissing,
        ResultNotLoadable,
        ResultTooLarge,
    )

# Each public name and the module defining it, imported on first use: ``fnjob --help`` and
# ``import fnjob`` stay fast, and a local run never loads the Kubernetes client.
_EXPORTS = {
    "AppendBuilder": "fnjob.image.builders",
    "AuthError": "fnjob.image.auth",
    "BUILDERS": "fnjob.options",
    "BaseImageNotFound": "fnjob.image.builders",
    "Build": "fnjob.options",
    "BuiltImage": "fnjob.image.builders",
    "CallNotEncodable": "fnjob.run.protocol",
    "ClaimMount": "fnjob.options",
    "ClusterAccessDenied": "fnjob.run.cluster",
    "ClusterConfigError": "fnjob.run.cluster",
    "ClusterError": "fnjob.run.cluster",
    "ClusterUnreachable": "fnjob.run.cluster",
    "CodePackage": "fnjob.image.package",
    "ContainerEngineError": "fnjob.run.local",
    "ContainerEngineNotFound": "fnjob.run.local",
    "Credentials": "fnjob.image.auth",
    "DEPLOYERS": "fnjob.api",
    "DockerBuildFailed": "fnjob.image.builders",
    "DockerBuilder": "fnjob.image.builders",
    "DockerDaemonUnavailable": "fnjob.image.builders",
    "FnJobError": "fnjob.errors",
    "GpuGroup": "fnjob.run.gpugroups",
    "GpuGroups": "fnjob.run.gpugroups",
    "GpuGroupsFileError": "fnjob.run.gpugroups",
    "ImageFormatError": "fnjob.image.layer",
    "Job": "fnjob.api",
    "JobDeployer": "fnjob.run.job",
    "JobFailed": "fnjob.errors",
    "JobOptions": "fnjob.run.manifest",
    "JobTimeout": "fnjob.errors",
    "Lifecycle": "fnjob.options",
    "LocalDeployer": "fnjob.run.local",
    "LocalOptions": "fnjob.run.local",
    "LogStreamStalled": "fnjob.run.cluster",
    "PodNotCreated": "fnjob.errors",
    "ProgressEvent": "fnjob.progress",
    "PythonVersionMismatch": "fnjob.image.pythonversion",
    "RegistryError": "fnjob.image.registry",
    "RegistryServerError": "fnjob.image.registry",
    "RegistryUnreachable": "fnjob.image.registry",
    "RankFailed": "fnjob.run.protocol",
    "RemoteError": "fnjob.run.protocol",
    "RendezvousTimeout": "fnjob.run.protocol",
    "RemoteFunction": "fnjob.api",
    "Reporter": "fnjob.api",
    "Resources": "fnjob.options",
    "ResultMissing": "fnjob.run.protocol",
    "ResultNotLoadable": "fnjob.run.protocol",
    "ResultTooLarge": "fnjob.run.protocol",
    "RetryPolicy": "fnjob.image.registry",
    "Scheduling": "fnjob.options",
    "SecretEnv": "fnjob.options",
    "SecretKey": "fnjob.options",
    "Security": "fnjob.options",
    "Terminated": "fnjob.run.interrupts",
    "UnshippableFunction": "fnjob.image.package",
    "Volumes": "fnjob.options",
    "job": "fnjob.api",
    "load_gpu_groups": "fnjob.run.gpugroups",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fnjob' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "RankFailed",
    "RegistryError",
    "RegistryServerError",
    "RegistryUnreachable",
    "RemoteError",
    "RemoteFunction",
    "RendezvousTimeout",
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
