"""Run a built image as a Kubernetes Job and get the function's outcome back.

The deployer only orchestrates; the pieces live in their own modules:

- ``fnjob.run.manifest`` (pure): the Job and the run's Secret as dicts;
- ``fnjob.run.cluster``: the API calls, typed errors (``ClusterUnreachable``...);
- ``fnjob.run.follow``: waiting for the pod, streaming its log, the Job's end.

One run: a fresh run id and signing key; create the Job (its pod mounts the run's Secret);
create the Secret (the pickled call and the key), owned by the Job; follow the Job; delete
it (Foreground: its pod and its Secret go too) when it fails, when it succeeded unless
``keep_job``, and when the caller stops: Ctrl-C, SIGTERM, SIGHUP or interpreter exit.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fnjob.errors import FnJobError
from fnjob.run import interrupts
from fnjob.run.cluster import Cluster, ClusterError, connect, current_namespace
from fnjob.run.follow import CreatedJob, JobFollower, LogSink, StatusSink
from fnjob.run.manifest import JobOptions, build_job_manifest, build_run_secret, run_secret_name
from fnjob.run.protocol import Outcome, new_run_id, new_run_key

__all__ = ["JobDeployer"]


class JobDeployer:
    """Runs an image as a Kubernetes Job and returns what the function returned.

    ``api_client`` is a ``kubernetes.client.ApiClient``; without one, the in-cluster
    config or the kubeconfig is used (``fnjob.run.cluster.connect``).
    """

    def __init__(self, options: JobOptions | None = None, *, api_client: Any = None) -> None:
        self.options = options or JobOptions()
        self._api_client = api_client

    def run(
        self,
        image: str,
        call: bytes,
        *,
        function_name: str,
        on_log: LogSink,
        on_status: StatusSink | None = None,
        on_stderr: LogSink | None = None,
    ) -> Any:
        """Create the Job, stream its logs to ``on_log``, return the function's value.

        ``call`` is ``fnjob.run.protocol.encode_call(args, kwargs)``. Raises the function's own
        exception (rebuilt from its authenticated outcome), ``ResultNotLoadable``,
        ``JobFailed`` / ``JobTimeout`` / ``PodNotCreated`` when the Job ends without an
        outcome, ``ResultMissing``, ``ClusterError`` (``ClusterUnreachable``,
        ``ClusterAccessDenied``) for the API. The Job is deleted when it fails, when the
        caller is interrupted or terminated, and on success unless ``keep_job``. Once the
        function's outcome is in, fnjob's Jobs whose caller is gone are deleted
        (``fnjob.run.cleanup``).
        """
        from fnjob.run import cleanup

        options = self.options
        status = on_status or (lambda _text: None)
        cluster = Cluster(self._api_client or connect(), options.namespace or current_namespace())
        if options.placement is not None:
            status(options.placement.describe())
        with interrupts.signals_raise():
            outcome = self._run(cluster, image, call, function_name, on_log, status)
        # The run reached the API: remove what gone callers left (a clean-up that fails
        # must not cost the run its result; `fnjob cleanup` says why).
        try:
            for leftover in cleanup.remove_cluster_leftovers(cluster):
                status(f"deleted {leftover.kind} {leftover.name}: {leftover.reason}")
        except FnJobError as error:
            status(f"could not clean up after gone callers: {error}")
        return outcome.unwrap()

    def _run(
        self,
        cluster: Cluster,
        image: str,
        call: bytes,
        function_name: str,
        on_log: LogSink,
        status: StatusSink,
    ) -> Outcome:
        from fnjob.run import cleanup

        options = self.options
        run_id, key = new_run_id(), new_run_key()
        manifest = build_job_manifest(
            image=image,
            function_name=function_name,
            run_id=run_id,
            namespace=cluster.namespace,
            options=options,
            caller=cleanup.caller_identity(),
        )
        for warning in _claim_warnings(cluster, options):
            status(f"warning: {warning}")
        try:
            created = cluster.create_job(manifest)
        except ClusterError:
            raise
        except BaseException:
            # Interrupted while the request was in flight: the Job may exist without us
            # knowing its name; find it by its run id. ttlSecondsAfterFinished is the backstop.
            with contextlib.suppress(Exception):
                cluster.delete_jobs_of_run(run_id)
            raise
        job = CreatedJob(name=created.metadata.name, uid=created.metadata.uid)
        status(f"job {job.name} created in namespace {cluster.namespace}")
        succeeded = False
        with interrupts.on_exit(lambda: self._delete(cluster, job, status, quiet=True)):
            try:
                cluster.create_secret(
                    build_run_secret(
                        run_id=run_id,
                        namespace=cluster.namespace,
                        job_name=job.name,
                        job_uid=job.uid,
                        call=call,
                        key=key,
                    )
                )
                follower = JobFollower(
                    cluster,
                    job,
                    key=key,
                    lifecycle=options.lifecycle,
                    on_log=on_log,
                    status=status,
                )
                outcome = follower.outcome()
                succeeded = outcome.ok
                return outcome
            finally:
                if not succeeded or not options.keep_job:
                    self._delete(cluster, job, status, quiet=not succeeded)
                else:
                    # The Job stays for inspection; the arguments and the key do not.
                    cluster.delete_secret(run_secret_name(run_id))

    def _delete(
        self, cluster: Cluster, job: CreatedJob, status: StatusSink, *, quiet: bool
    ) -> None:
        try:
            if cluster.delete_job(job.name):
                status(f"job {job.name} deleted")
        except ClusterError as error:
            if not quiet:
                raise
            # Already failing: report, keep the original error. ttlSecondsAfterFinished
            # removes the Job eventually.
            status(f"could not delete job {job.name}: {error}")


def _claim_warnings(cluster: Cluster, options: JobOptions) -> list[str]:
    """Claims the job mounts that a running pod holds ReadWriteOnce: the job's pod waits
    on ``Multi-Attach`` on any other node (and fnjob then stops it). Advisory: a claim or
    pod list the caller may not read gives no warning."""
    warnings = []
    for mount in options.volumes.claims:
        try:
            claim = cluster.read_claim(mount.claim)
            modes = set((claim.spec and claim.spec.access_modes) or ())
            if not modes & _SINGLE_NODE_MODES or modes & _SHARED_MODES:
                continue
            holders = cluster.running_pods_using(mount.claim)
        except ClusterError:
            continue
        pinned = options.scheduling.node_selector.get(_HOSTNAME_LABEL)
        if not holders or (pinned == holders[0][1] and "ReadWriteOncePod" not in modes):
            continue
        pod, node = holders[0]
        if "ReadWriteOncePod" in modes:
            warnings.append(
                f"claim {mount.claim!r} is ReadWriteOncePod and in use by pod {pod}: the "
                "job's pod cannot start until that pod stops"
            )
            continue
        warnings.append(
            f"claim {mount.claim!r} is ReadWriteOnce and mounted by running pod {pod} on node "
            f"{node}: the job's pod can only start there (Scheduling(node_selector="
            f'{{"{_HOSTNAME_LABEL}": "{node}"}})); on another node it waits on '
            "Multi-Attach, and fnjob stops it"
        )
    return warnings


_HOSTNAME_LABEL = "kubernetes.io/hostname"
_SINGLE_NODE_MODES = frozenset({"ReadWriteOnce", "ReadWriteOncePod"})
_SHARED_MODES = frozenset({"ReadWriteMany", "ReadOnlyMany"})
