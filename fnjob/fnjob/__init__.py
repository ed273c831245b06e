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
        RankFailed,
        RemoteError,
        RendezvousTimeout,
        ResultMissing,
        ResultNotLoadable,
        ResultTooLarge,
    )
    from fnjob.pythonversion import PythonVersionMismatch
    from fnjob.registry import RegistryError, RegistryServerError, RegistryUnreachable, RetryPolicy

# Each public name and the module defining it, imported on first use: ``fnjob --help`` and
# ``import fnjob`` stay fast, and a local run never loads the Kubernetes client.
_EXPORTS = {
    "AppendBuilder": "fnjob.build",
    "AuthError": "fnjob.auth",
    "BUILDERS": "fnjob.options",
    "BaseImageNotFound": "fnjob.build",
    "Build": "fnjob.options",
    "BuiltImage": "fnjob.build",
    "CallNotEncodable": "fnjob.protocol",
    "ClaimMount": "fnjob.options",
    "ClusterAccessDenied": "fnjob.cluster",
    "ClusterConfigError": "fnjob.cluster",
    "ClusterError": "fnjob.cluster",
    "ClusterUnreachable": "fnjob.cluster",
    "CodePackage": "fnjob.package",
    "ContainerEngineError": "fnjob.deploy_local",
    "ContainerEngineNotFound": "fnjob.deploy_local",
    "Credentials": "fnjob.auth",
    "DEPLOYERS": "fnjob.api",
    "DockerBuildFailed": "fnjob.build",
    "DockerBuilder": "fnjob.build",
    "DockerDaemonUnavailable": "fnjob.build",
    "FnJobError": "fnjob.errors",
    "GpuGroup": "fnjob.gpugroups",
    "GpuGroups": "fnjob.gpugroups",
    "GpuGroupsFileError": "fnjob.gpugroups",
    "ImageFormatError": "fnjob.image",
    "Job": "fnjob.api",
    "JobDeployer": "fnjob.deploy_job",
    "JobFailed": "fnjob.errors",
    "JobOptions": "fnjob.manifest",
    "JobTimeout": "fnjob.errors",
    "Lifecycle": "fnjob.options",
    "LocalDeployer": "fnjob.deploy_local",
    "LocalOptions": "fnjob.deploy_local",
    "LogStreamStalled": "fnjob.cluster",
    "PodNotCreated": "fnjob.errors",
    "ProgressEvent": "fnjob.progress",
    "PythonVersionMismatch": "fnjob.pythonversion",
    "RegistryError": "fnjob.registry",
    "RegistryServerError": "fnjob.registry",
    "RegistryUnreachable": "fnjob.registry",
    "RankFailed": "fnjob.protocol",
    "RemoteError": "fnjob.protocol",
    "RendezvousTimeout": "fnjob.protocol",
    "RemoteFunction": "fnjob.api",
    "Reporter": "fnjob.api",
    "Resources": "fnjob.options",
    "ResultMissing": "fnjob.protocol",
    "ResultNotLoadable": "fnjob.protocol",
    "ResultTooLarge": "fnjob.protocol",
    "RetryPolicy": "fnjob.registry",
    "Scheduling": "fnjob.options",
    "SecretEnv": "fnjob.options",
    "SecretKey": "fnjob.options",
    "Security": "fnjob.options",
    "Terminated": "fnjob.interrupts",
    "UnshippableFunction": "fnjob.package",
    "Volumes": "fnjob.options",
    "job": "fnjob.api",
    "load_gpu_groups": "fnjob.gpugroups",
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
