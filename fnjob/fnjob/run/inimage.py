"""What ``import fnjob`` gives code that runs inside an fnjob image.

This file is copied into every image as ``/fnjob/vendor/fnjob/__init__.py``, ahead of any
fnjob the base image may have. Inside the job the function already runs where it should, so
fnjob's entry points run it right here: ``Job(...).run(f, *args)`` returns ``f(*args)``,
``@job(...)``, ``Job(...).remote(f)`` and ``fairing.config.fn(f)`` give ``f`` back, and
``fairing.config.set_builder`` / ``set_deployer`` / ``set_preprocessor`` are accepted and do
nothing; the pieces a run is described with (``Resources``, ``Scheduling``, ...) are accepted
too, and fnjob's error types exist with the same hierarchy. That is what lets a script or
module that uses fnjob at its top (the migrated Fairing tutorial does) be imported or run as
the job itself. The rest of fnjob (builders, deployers, the registry client) is not in the
image; using it raises ``FnJobError``.

Standard library only, and syntax Python 3.7 accepts: the base image's Python runs it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

INSIDE_IMAGE = True

_NOT_HERE = (
    "is not available inside an fnjob job's container: the job already runs here "
    "(fnjob's builders and deployers run on the machine that starts jobs)"
)


class FnJobError(Exception):
    """Base of fnjob's errors (the same name as on the caller's side)."""


# fnjob's error types, so ``except fnjob.JobFailed`` in shipped code still resolves; each
# with the same parent as on the caller's side.
_ERROR_PARENTS = {
    "AuthError": "FnJobError",
    "BaseImageNotFound": "FnJobError",
    "CallNotEncodable": "FnJobError",
    "ClusterError": "FnJobError",
    "ClusterAccessDenied": "ClusterError",
    "ClusterConfigError": "ClusterError",
    "ClusterUnreachable": "ClusterError",
    "LogStreamStalled": "ClusterError",
    "ContainerEngineError": "FnJobError",
    "ContainerEngineNotFound": "FnJobError",
    "DockerBuildFailed": "FnJobError",
    "DockerDaemonUnavailable": "FnJobError",
    "GpuGroupsFileError": "FnJobError",
    "ImageFormatError": "FnJobError",
    "JobFailed": "FnJobError",
    "JobTimeout": "JobFailed",
    "PodNotCreated": "JobFailed",
    "PythonVersionMismatch": "FnJobError",
    "RankFailed": "FnJobError",
    "RegistryError": "FnJobError",
    "RegistryServerError": "RegistryError",
    "RegistryUnreachable": "RegistryError",
    "RemoteError": "FnJobError",
    "RendezvousTimeout": "RankFailed",
    "ResultMissing": "FnJobError",
    "ResultNotLoadable": "FnJobError",
    "ResultTooLarge": "FnJobError",
    "UnshippableFunction": "FnJobError",
}
ERROR_NAMES = tuple(_ERROR_PARENTS)
_errors: dict[str, type] = {"FnJobError": FnJobError}
for _name, _parent in _ERROR_PARENTS.items():  # parents are listed before their children
    _errors[_name] = type(_name, (_errors[_parent],), {})
# A bad GPU groups file is also a bad setting, as on the caller's side.
_errors["GpuGroupsFileError"] = type("GpuGroupsFileError", (FnJobError, ValueError), {})
globals().update(_errors)
del _name, _parent


class Terminated(BaseException):
    """SIGTERM or SIGHUP stopped a run (the same name as on the caller's side)."""


class _Piece:
    """A piece of a run's description (``Resources(gpus=1)``...): accepted, and unused here,
    where the run already is."""

    def __init__(self, *args: Any, **settings: Any) -> None:
        self.settings: tuple[tuple[Any, ...], dict[str, Any]] = (args, settings)

    @classmethod
    def parse(cls, *args: Any) -> _Piece:
        return cls(*args)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise FnJobError(f"fnjob.{type(self).__name__}.{name} {_NOT_HERE}")


# The pieces ``Job(...)`` is described with, so a module that builds its Job at the top
# (``Job(resources=Resources(gpus=1))``) imports inside the job too.
PIECE_NAMES = (
    "Build",
    "ClaimMount",
    "Lifecycle",
    "Resources",
    "Scheduling",
    "SecretEnv",
    "SecretKey",
    "Security",
    "Volumes",
)
globals().update({name: type(name, (_Piece,), {}) for name in PIECE_NAMES})


class Job:
    """Accepts the settings of ``fnjob.Job`` and runs functions here."""

    def __init__(self, *args: Any, **settings: Any) -> None:
        self.settings: tuple[tuple[Any, ...], dict[str, Any]] = (args, settings)

    def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    def remote(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise FnJobError(f"fnjob.Job.{name} {_NOT_HERE}")


def job(*args: Any, **settings: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@job(...)``: the function itself, run here."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        return func

    return decorate


class _FairingConfig:
    """``fairing.config`` inside the job: settings are ignored, functions run here."""

    def set_builder(self, *args: Any, **options: Any) -> None:
        return None

    def set_deployer(self, *args: Any, **options: Any) -> None:
        return None

    def set_preprocessor(self, *args: Any, **options: Any) -> None:
        return None

    def reset(self) -> None:
        return None

    def fn(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func

    def run(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise FnJobError(f"fairing.config.{name} {_NOT_HERE}")


def get_resource_mutator(*args: Any, **kwargs: Any) -> None:
    """Resources only matter where the job is started; nothing to do here."""
    return None


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    raise FnJobError(f"fnjob.{name} {_NOT_HERE}")


def _install_submodules() -> None:
    """``fnjob.fairing`` and ``fnjob.fairing.kubernetes.utils``, as the caller imports them."""
    fairing = types.ModuleType("fnjob.fairing", "fnjob's Fairing facade, inside the job")
    fairing.config = _FairingConfig()  # type: ignore[attr-defined]
    fairing.get_resource_mutator = get_resource_mutator  # type: ignore[attr-defined]
    kubernetes = types.ModuleType("fnjob.fairing.kubernetes")
    utils = types.ModuleType("fnjob.fairing.kubernetes.utils")
    utils.get_resource_mutator = get_resource_mutator  # type: ignore[attr-defined]
    kubernetes.utils = utils  # type: ignore[attr-defined]
    fairing.kubernetes = kubernetes  # type: ignore[attr-defined]
    fairing.__path__ = []  # a package, so submodules import
    kubernetes.__path__ = []
    module = sys.modules[__name__]
    module.fairing = fairing  # type: ignore[attr-defined]
    sys.modules.update(
        {
            "fnjob.fairing": fairing,
            "fnjob.fairing.kubernetes": kubernetes,
            "fnjob.fairing.kubernetes.utils": utils,
        }
    )


if __name__ == "fnjob":  # only in the image; never on the caller's side (fnjob.run.inimage)
    _install_submodules()
