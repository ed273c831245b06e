"""The ``fnjob`` command: build, push and run a function from a file; show progress and logs.

The only place in fnjob that prints or exits: library errors become one clear message
and a distinct exit code (see ``EXIT_CODES``); expected errors never show a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnjob.options import BUILDERS

# Everything else loads once the command line is parsed: ``fnjob --help`` and usage errors
# cost no more than Python's own start (the Kubernetes client alone took 0.7 s to import).
if TYPE_CHECKING:
    from rich.console import Console

    from fnjob.api import Job
    from fnjob.image.builders import BuiltImage
    from fnjob.image.package import CodePackage
    from fnjob.report import RichReporter

EXIT_OK = 0
EXIT_FUNCTION_RAISED = 1
EXIT_USAGE = 2
EXIT_BUILD = 3
EXIT_REGISTRY = 4
EXIT_CLUSTER = 5
EXIT_JOB_FAILED = 6
EXIT_TIMEOUT = 7
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "the function returned (its value is printed as JSON, or repr)",
    EXIT_FUNCTION_RAISED: "the function raised; its remote traceback is shown",
    EXIT_USAGE: "bad command line or option value",
    EXIT_BUILD: "cannot package or build (function, Python version, base image)",
    EXIT_REGISTRY: "registry unreachable, refused, or credentials rejected",
    EXIT_CLUSTER: "cluster (API server) or container engine unreachable / permission denied",
    EXIT_JOB_FAILED: "no usable result: the job died without one (OOMKilled, image pull, "
    "unschedulable, no pod created) or its type is not installed here",
    EXIT_TIMEOUT: "the job ran past --timeout",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); the job or container was deleted",
}


@functools.cache
def _error_exit_codes() -> tuple[tuple[type[BaseException], int], ...]:
    """Error types and their exit codes, most specific first: JobTimeout is a JobFailed,
    ClusterAccessDenied a ClusterError."""
    from fnjob.errors import FnJobError, JobFailed, JobTimeout
    from fnjob.image.auth import AuthError
    from fnjob.image.builders import BaseImageNotFound, DockerBuildFailed, DockerDaemonUnavailable
    from fnjob.image.layer import ImageFormatError
    from fnjob.image.package import UnshippableFunction
    from fnjob.image.pythonversion import PythonVersionMismatch
    from fnjob.image.registry import RegistryError
    from fnjob.run.cluster import ClusterError
    from fnjob.run.local import ContainerEngineError, ContainerEngineNotFound
    from fnjob.run.protocol import CallNotEncodable, RemoteError, ResultMissing, ResultNotLoadable

    return (
        (JobTimeout, EXIT_TIMEOUT),
        (JobFailed, EXIT_JOB_FAILED),
        (ResultMissing, EXIT_JOB_FAILED),
        (ResultNotLoadable, EXIT_JOB_FAILED),
        (RemoteError, EXIT_FUNCTION_RAISED),
        (ClusterError, EXIT_CLUSTER),
        (ContainerEngineNotFound, EXIT_CLUSTER),
        (ContainerEngineError, EXIT_CLUSTER),
        (AuthError, EXIT_REGISTRY),
        (RegistryError, EXIT_REGISTRY),
        (UnshippableFunction, EXIT_BUILD),
        (PythonVersionMismatch, EXIT_BUILD),
        (BaseImageNotFound, EXIT_BUILD),
        (ImageFormatError, EXIT_BUILD),
        (DockerBuildFailed, EXIT_BUILD),
        (DockerDaemonUnavailable, EXIT_BUILD),
        (CallNotEncodable, EXIT_USAGE),
        (ValueError, EXIT_USAGE),
        (FnJobError, EXIT_JOB_FAILED),
    )


def exit_code_for(error: BaseException) -> int:
    for error_type, code in _error_exit_codes():
        if isinstance(error, error_type):
            return code
    raise error


# ---------------------------------------------------------------------------------------
# Command line


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    return (
        "exit codes:\n"
        f"{codes}\n\n"
        "defaults from the environment: FNJOB_BASE_IMAGE, FNJOB_REGISTRY, FNJOB_NAMESPACE,\n"
        "FNJOB_REGISTRY_TIMEOUT, FNJOB_DEFAULT_TIMEOUT;\n"
        "GPU groups (--gpu-group) from the file FNJOB_GPU_GROUPS names.\n"
        "registry credentials: podman/skopeo auth files ($REGISTRY_AUTH_FILE,\n"
        "$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json), then\n"
        "~/.docker/config.json (or $DOCKER_CONFIG); ECR through boto3;\n"
        "cluster: in-cluster service account inside a pod, else ~/.kube/config ($KUBECONFIG).\n"
        "--json / --output FILE: {status, exit_code, image, digest, value, value_type,\n"
        "value_repr, error}; a value that cannot be loaded here (its module is missing) still\n"
        "has its type and repr, and error.missing_module says why."
    )


def _add_image_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the .py file (or .ipynb notebook) to ship")
    parser.add_argument(
        "--function",
        help="the top-level function to call; without it the file runs as a script",
    )
    parser.add_argument(
        "--base-image",
        default=os.environ.get("FNJOB_BASE_IMAGE"),
        help="image with Python to build on ($FNJOB_BASE_IMAGE)",
    )
    parser.add_argument(
        "--registry",
        default=os.environ.get("FNJOB_REGISTRY"),
        help="where to push: host[:port][/path] ($FNJOB_REGISTRY)",
    )
    parser.add_argument("--image-name", default="fnjob", help="repository under the registry")
    parser.add_argument("--builder", choices=BUILDERS, default="append")
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST",
        help="allow plain HTTP to this registry host (loopback always is)",
    )
    parser.add_argument(
        "--base-python",
        metavar="X.Y",
        help="the base image's Python, when you know it (skips reading its layers)",
    )
    parser.add_argument(
        "--registry-timeout",
        type=float,
        metavar="SECONDS",
        help="how long one registry operation may wait in total, retries included "
        "($FNJOB_REGISTRY_TIMEOUT, default 30)",
    )
    parser.add_argument(
        "--requirements",
        help="a requirements file, installed into the image when it is built",
    )
    parser.add_argument(
        "--extra-file", action="append", default=[], metavar="PATH", help="ship this file too"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only a JSON result on stdout (the function's output goes to stderr)",
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="also write the JSON result to FILE"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fnjob",
        description="Package a Python function into an image, push it, run it as a "
        "Kubernetes Job (or locally with podman/docker) and print its return value.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="build, push, run and print the result",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_image_options(run)
    run.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the function; VALUE is read as JSON when it parses "
        "(0.1, true, [1,2]) and as a string otherwise",
    )
    run.add_argument("--cpu", help='CPU cores or quantity (0.5, "500m")')
    run.add_argument("--memory", help='memory quantity ("8Gi") or GiB as a number')
    run.add_argument("--gpus", type=int, default=0, help="NVIDIA GPUs (nvidia.com/gpu)")
    run.add_argument(
        "--gpu-group",
        help="GPU group from $FNJOB_GPU_GROUPS (default: the file's default group)",
    )
    run.add_argument(
        "--namespace",
        default=os.environ.get("FNJOB_NAMESPACE"),
        help="default: the pod's own namespace, else the kubeconfig context's",
    )
    run.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="run on this many pods (containers with --local), max(--gpus, 1) processes "
        "each, under torch.distributed; rank 0's value comes back",
    )
    run.add_argument(
        "--training-runtime",
        help="with --nodes > 1: the ClusterTrainingRuntime of a TrainJob (default "
        "$FNJOB_TRAINING_RUNTIME; without one, an indexed Job and a headless Service)",
    )
    run.add_argument("--local", action="store_true", help="run with podman/docker here")
    run.add_argument("--engine", choices=("podman", "docker"), help="with --local")
    run.add_argument(
        "--timeout",
        type=int,
        help="seconds before the run is stopped (default $FNJOB_DEFAULT_TIMEOUT, else 86400; "
        "'none' there for no deadline)",
    )
    run.add_argument(
        "--pod-creation-timeout",
        type=float,
        metavar="SECONDS",
        help="fail (exit 6, with the Job's events) when no pod exists after this long "
        "(default 120)",
    )
    run.add_argument("--service-account", default="default-editor")
    run.add_argument(
        "--mount-service-account-token",
        action="store_true",
        help="give the function the service account's API token (off by default)",
    )
    run.add_argument("--run-as-user", type=int, metavar="UID", help="numeric user id")
    run.add_argument("--run-as-group", type=int, metavar="GID", help="numeric group id")
    run.add_argument("--fs-group", type=int, metavar="GID", help="group owning the volumes")
    run.add_argument("--image-pull-secret", action="append", default=[], metavar="NAME")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label on the Job and its pod (the Kubernetes deployer)",
    )
    run.add_argument(
        "--env-from-secret",
        action="append",
        default=[],
        metavar="NAME",
        help="every key of this Secret becomes an environment variable (envFrom)",
    )
    run.add_argument(
        "--volume",
        action="append",
        default=[],
        metavar="CLAIM:PATH[:ro]",
        help="mount a PersistentVolumeClaim, e.g. workspace-nb:/home/jovyan:ro",
    )
    run.add_argument(
        "--shm-size", metavar="SIZE", help='size of /dev/shm (memory-backed), e.g. "2Gi"'
    )
    run.add_argument("--keep-job", action="store_true", help="keep a successful Job for inspection")

    build = commands.add_parser(
        "build",
        help="build and push; print the digest-pinned reference",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_image_options(build)

    cleanup = commands.add_parser(
        "cleanup",
        help="remove runs whose caller is gone (and, with --older-than, any older run)",
        description="Delete fnjob's Jobs (with their pods and Secrets) in the namespace, or "
        "with --local its podman/docker containers here, that were started by a process of "
        "this host that no longer runs (killed, its notebook kernel gone); with --older-than, "
        "also every fnjob run older than AGE, whoever started it. Each run also does this "
        "for runs whose caller is gone.",
    )
    cleanup.add_argument(
        "--older-than",
        type=parse_age,
        metavar="AGE",
        help='also remove every fnjob run older than this: seconds, or "30m", "2h", "1d"',
    )
    cleanup.add_argument(
        "--namespace",
        default=os.environ.get("FNJOB_NAMESPACE"),
        help="default: the pod's own namespace, else the kubeconfig context's",
    )
    cleanup.add_argument("--local", action="store_true", help="containers of podman/docker here")
    cleanup.add_argument("--engine", choices=("podman", "docker"), help="with --local")
    cleanup.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    return parser


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``"90"`` (seconds), ``"30m"``, ``"2h"``, ``"1d"`` -> seconds."""
    unit = _AGE_UNITS.get(text[-1:], 0) if text[-1:].isalpha() else 1
    number = text[:-1] if text[-1:].isalpha() else text
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = 0.0
    if not unit or not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f'{text!r} is not an age like 90, "30m", "2h" or "1d"')
    return seconds


def _cleanup(args: argparse.Namespace) -> int:
    """``fnjob cleanup``: prints one line per run removed (or found, with ``--dry-run``)."""
    from fnjob.run import cleanup

    if args.local:
        from fnjob.run.local import find_engine

        engine = find_engine(args.engine)
        on_engine = cleanup.local_leftovers if args.dry_run else cleanup.remove_local_leftovers
        found = on_engine(engine, os.environ, older_than=args.older_than)
    else:
        from fnjob.run.cluster import Cluster, connect, current_namespace

        cluster = Cluster(connect(), args.namespace or current_namespace())
        on_cluster = cleanup.cluster_leftovers if args.dry_run else cleanup.remove_cluster_leftovers
        found = on_cluster(cluster, older_than=args.older_than)
    verb = "would remove" if args.dry_run else "removed"
    for leftover in found:
        print(f"{verb} {leftover.kind} {leftover.name}: {leftover.reason}", flush=True)
    if not found:
        print("nothing to clean up", file=sys.stderr, flush=True)
    return EXIT_OK


def parse_key_values(items: Sequence[str], *, option: str, as_json: bool) -> dict[str, Any]:
    """``["lr=0.1", "name=x"]`` -> ``{"lr": 0.1, "name": "x"}`` (JSON values when asked)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or (as_json and not key.isidentifier()):
            raise ValueError(f"{option} {item!r} must look like KEY=VALUE")
        value: Any = raw
        if as_json:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        parsed[key] = value
    return parsed


def _package(args: argparse.Namespace) -> CodePackage:
    from fnjob.image.package import package_file, package_notebook

    path: Path = args.file
    requirements = args.requirements or ()
    if path.suffix == ".ipynb":
        return package_notebook(
            path,
            function=args.function,
            extra_files=args.extra_file,
            requirements=requirements,
        )
    return package_file(
        path, function=args.function, extra_files=args.extra_file, requirements=requirements
    )


def _number_or_text(value: str | None) -> str | float | None:
    """``--cpu 0.5`` is cores and ``--memory 8`` GiB, as in the library; else a quantity."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    # "1e400" is inf as a float: left as text, the error quotes what was typed.
    return number if math.isfinite(number) else value


def _job(args: argparse.Namespace, reporter: RichReporter) -> Job:
    from fnjob.api import Job
    from fnjob.options import (
        Build,
        ClaimMount,
        Lifecycle,
        Resources,
        Scheduling,
        SecretEnv,
        Security,
        Volumes,
    )

    if not args.base_image:
        raise ValueError("--base-image is required (or set FNJOB_BASE_IMAGE)")
    if not args.registry:
        raise ValueError("--registry is required (or set FNJOB_REGISTRY)")
    settings: dict[str, Any] = {
        "base_image": args.base_image,
        "registry": args.registry,
        "image_name": args.image_name,
        "building": Build(
            builder=args.builder,
            insecure_registries=tuple(args.insecure_registry),
            base_python=args.base_python,
            registry_timeout=args.registry_timeout,
        ),
        "reporter": reporter,
    }
    if args.command == "run":
        settings.update(
            resources=Resources(
                cpu=_number_or_text(args.cpu), memory=_number_or_text(args.memory), gpus=args.gpus
            ),
            scheduling=Scheduling(gpu_group=args.gpu_group),
            security=Security(
                service_account=args.service_account or None,
                service_account_token=args.mount_service_account_token,
                run_as_user=args.run_as_user,
                run_as_group=args.run_as_group,
                fs_group=args.fs_group,
                image_pull_secrets=tuple(args.image_pull_secret),
            ),
            volumes=Volumes(
                claims=tuple(ClaimMount.parse(spec) for spec in args.volume),
                shm_size=args.shm_size,
            ),
            env=parse_key_values(args.env, option="--env", as_json=False),
            labels=parse_key_values(args.label, option="--label", as_json=False),
            secret_env=SecretEnv(secrets=tuple(args.env_from_secret)),
            namespace=args.namespace,
            deployer="local" if args.local else "job",
            engine=args.engine,
            timeout=args.timeout,
            keep_job=args.keep_job,
            nodes=args.nodes,
            training_runtime=args.training_runtime,
            lifecycle=(
                Lifecycle()
                if args.pod_creation_timeout is None
                else Lifecycle(pod_creation_timeout=args.pod_creation_timeout)
            ),
            on_log=reporter.log,
            on_stderr=reporter.log_stderr,
        )
    return Job(**settings)


# ---------------------------------------------------------------------------------------
# Main


def _format_result(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def result_record(
    status: str,
    exit_code: int,
    *,
    image: BuiltImage | None = None,
    value: Any = None,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """The machine-readable result of ``--json`` / ``--output``."""
    record: dict[str, Any] = {
        "status": status,
        "exit_code": exit_code,
        "image": image.ref if image else None,
        "digest": image.digest if image else None,
        "value": None,
        "value_type": None,
        "value_repr": None,
        "error": None,
    }
    if status == "returned":
        kind = type(value)
        record["value_type"] = f"{kind.__module__}.{kind.__qualname__}"
        record["value_repr"] = repr(value)
        try:
            json.dumps(value)
            record["value"] = value
        except (TypeError, ValueError):
            pass
    if error is not None:
        record["error"] = {"type": type(error).__name__, "message": str(error)}
        pickled = getattr(error, "pickled_value", None)
        if isinstance(pickled, bytes):
            # ResultNotLoadable: the function returned; say what, and why it did not load.
            from fnjob.run.unloadable import describe_unloadable

            record["value_type"], record["value_repr"] = describe_unloadable(pickled)
            record["error"]["missing_module"] = getattr(error, "missing_module", None)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fnjob``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    import logging

    # urllib3 logs each retry of an unreachable server as a warning; the error says it once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    from fnjob.report import RichReporter, plain_console

    console = plain_console()
    if args.command == "cleanup":
        try:
            return _cleanup(args)
        except Exception as error:
            _report_error(console, error, None)
            return exit_code_for(error)
    # With --json, stdout carries only the result; the function's output moves to stderr.
    out = sys.stderr if args.json else sys.stdout
    image: BuiltImage | None = None
    value: Any = None
    try:
        # Before anything is built or run, so a typo does not cost a whole run.
        _check_output(args.output)
    except ValueError as error:
        _report_error(console, error, None)
        if args.json:
            record = result_record("failed", EXIT_USAGE, error=error)
            print(json.dumps(record), file=sys.stdout, flush=True)
        return EXIT_USAGE
    try:
        from fnjob.run.protocol import encode_call

        call = b""
        if args.command == "run":
            call = encode_call((), parse_key_values(args.arg, option="--arg", as_json=True))
        reporter = RichReporter(console, out, sys.stderr)
        job = _job(args, reporter)
        package = _package(args)
        image = job.build_package(package)  # shows progress through the reporter
        if args.command == "run":
            with reporter.running():
                value = job.run_image(
                    image.ref, call, function_name=args.function or args.file.stem
                )
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: fnjob removed what it had started")
        _emit_result(args, result_record("interrupted", EXIT_INTERRUPTED, image=image), console)
        return EXIT_INTERRUPTED
    except Exception as error:
        remote = _remote_traceback(error)
        # The function's own exception, whatever its type; else a library error (anything
        # else is a bug in fnjob and keeps its traceback).
        code = EXIT_FUNCTION_RAISED if remote is not None else exit_code_for(error)
        _report_error(console, error, remote)
        status = "raised" if code == EXIT_FUNCTION_RAISED else "failed"
        _emit_result(args, result_record(status, code, image=image, error=error), console)
        return code
    if args.command == "build":
        record = result_record("built", EXIT_OK, image=image)
        if not args.json:
            print(image.ref, file=sys.stdout, flush=True)
    else:
        record = result_record("returned", EXIT_OK, image=image, value=value)
        if value is not None and not args.json:
            print(_format_result(value), file=sys.stdout, flush=True)
    return EXIT_OK if _emit_result(args, record, console) else EXIT_USAGE


def _check_output(path: Path | None) -> None:
    """``--output FILE`` can be written (made empty if it did not exist)."""
    if path is None:
        return
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        raise ValueError(
            f"--output {path}: cannot write the result there ({error.strerror or error})"
        ) from None


def _emit_result(args: argparse.Namespace, record: dict[str, Any], console: Console) -> bool:
    """Print and/or write the JSON record; False (reported) when ``--output`` failed."""
    text = json.dumps(record)
    if args.json:
        print(text, file=sys.stdout, flush=True)
    if args.output is None:
        return True
    try:
        args.output.write_text(text + "\n", encoding="utf-8")
    except OSError as error:
        _report_error(
            console,
            ValueError(f"--output {args.output}: cannot write the result there ({error})"),
            None,
        )
        return False
    return True


def _remote_traceback(error: BaseException) -> str | None:
    from fnjob.run.protocol import RemoteError

    for note in getattr(error, "__notes__", ()):
        if note.startswith("Remote traceback:"):
            return str(note)
    if isinstance(error, RemoteError):
        return "Remote traceback:\n" + error.remote_traceback
    return None


def without_runner_frames(traceback_text: str) -> str:
    """The remote traceback minus the frames of fnjob's runner: only the user's code."""
    kept: list[str] = []
    skipping = False
    for line in traceback_text.splitlines():
        if line.startswith("  File "):
            skipping = line.startswith('  File "/fnjob/runner.py"')
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def _report_error(console: Console, error: BaseException, remote: str | None) -> None:
    from rich.markup import escape

    if remote is not None:
        console.print(without_runner_frames(remote.rstrip()), markup=False, highlight=False)
        console.print(
            "[bold red]the function raised[/bold red]",
            escape(f"{type(error).__name__}: {error}"),
            highlight=False,
        )
        return
    console.print("[bold red]error:[/bold red]", escape(str(error)), highlight=False)


if __name__ == "__main__":
    sys.exit(main())
