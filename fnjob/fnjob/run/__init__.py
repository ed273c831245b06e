"""Running it: the Job, multi-node and local deployers, manifests, logs, the outcome protocol,
the in-image runner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Deployer(Protocol):
    """What runs a built image with an encoded call and returns the function's value:
    ``JobDeployer``, ``RanksJobDeployer`` (a cluster), ``LocalDeployer``,
    ``LocalRanksDeployer`` (podman or docker here)."""

    def run(
        self,
        image: str,
        call: bytes,
        *,
        function_name: str,
        on_log: Callable[[str], None],
        on_status: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
    ) -> Any:
        """Run ``image`` with ``call``; stream output to ``on_log`` (stderr to ``on_stderr``
        where the deployer can tell the streams apart); return the value or raise."""
        ...
