"""The root of fnjob's exception hierarchy, and the run errors both deployers raise.

Every error the library raises on purpose is a ``FnJobError``; the CLI maps them to
messages and exit codes. Modules define their specific errors next to the code that
raises them and re-export them from ``fnjob``; errors shared by the Kubernetes and the
local deployer (a run that died without a result) live here.
"""

from __future__ import annotations

from collections.abc import Sequence


class FnJobError(Exception):
    """Base class of every error fnjob raises on purpose."""


class JobFailed(FnJobError):
    """The run failed without the function reporting an exception of its own.

    ``reason`` is what Kubernetes (or the container engine) said (``OOMKilled``,
    ``ImagePullBackOff``, ``Unschedulable``, ``FailedCreate``, ``DeadlineExceeded``,
    ``Error``...), ``exit_code`` the container's exit code when it ran, ``last_logs`` the
    final lines it printed.
    """

    def __init__(
        self,
        job_name: str,
        *,
        reason: str,
        message: str = "",
        exit_code: int | None = None,
        last_logs: Sequence[str] = (),
    ) -> None:
        self.job_name = job_name
        self.reason = reason
        self.detail = message
        self.exit_code = exit_code
        self.last_logs = tuple(last_logs)
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"job {self.job_name} failed: {self.reason}"
        if self.exit_code is not None:
            text += f" (exit code {self.exit_code})"
        if self.detail:
            text += f": {self.detail}"
        hint = _REASON_HINTS.get(self.reason)
        if hint:
            text += f"\nhint: {hint}"
        if self.last_logs:
            text += "\nlast log lines:\n  " + "\n  ".join(self.last_logs)
        return text


class JobTimeout(JobFailed):
    """The run went past its deadline (``timeout``) and was stopped."""


class PodNotCreated(JobFailed):
    """The Job exists but no pod appeared within the bound; ``events`` are the Job's own
    warnings, e.g. ``FailedCreate: ... serviceaccount "default-editor" not found``."""

    def __init__(self, job_name: str, *, waited_seconds: float, events: Sequence[str]) -> None:
        self.events = tuple(events)
        detail = f"no pod was created within {waited_seconds:g} s"
        if self.events:
            detail += "; the Job's events:\n  " + "\n  ".join(self.events)
        else:
            detail += " and the Job has no events (is the Job controller running?)"
        super().__init__(job_name, reason="FailedCreate", message=detail)


_PULL_HINT = (
    "the node cannot pull the image: check the registry name and that the service account "
    "has an imagePullSecret for it (or the nodes have registry access)"
)
_REASON_HINTS = {
    "OOMKilled": "the container ran out of memory; ask for more (Resources(memory=...))",
    "ImagePullBackOff": _PULL_HINT,
    "ErrImagePull": _PULL_HINT,
    "Unschedulable": "no node can take the pod: lower cpu/memory/gpus, or add GPU nodes",
    "DeadlineExceeded": "raise timeout=... or make the function faster",
    "FailedCreate": "the Job controller cannot make the pod: check that the service account "
    "exists, the namespace's ResourceQuota (pods need cpu/memory requests) and its Pod Security "
    "level (run_as_user=... satisfies 'restricted')",
}
