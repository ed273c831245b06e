"""The runtime protocol end to end: the real runner in a subprocess, parsed by the caller."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

import fnjob.runner
from fnjob.protocol import (
    MAX_CALL_BYTES,
    OUTCOME_PREFIX,
    CallNotEncodable,
    RemoteError,
    ResultMissing,
    encode_call,
    is_protocol_line,
    parse_outcome,
)

RUNNER = Path(fnjob.runner.__file__)

JOB_MODULE = """
import sys

class BadInput(Exception):
    pass

def add(a, b=0):
    print("adding", a, b)
    return a + b

def shout_partial():
    sys.stdout.write("no newline at the end")
    return "done"

def reject(x):
    print("to stderr", file=sys.stderr)
    raise BadInput(f"bad input {x!r}")

def unpicklable_result():
    import threading
    return threading.Lock()

def leave():
    sys.exit(3)
"""


def _run(
    tmp_path: Path, entry: str, call: str = "", module: str = "jobmod", **env: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / f"{module}.py").write_text(JOB_MODULE)
    environment = dict(os.environ)
    environment.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path(cloudpickle.__file__).parent.parent)]),
        FNJOB_ENTRY=entry,
        FNJOB_CALL=call,
        **env,
    )
    return subprocess.run(
        [sys.executable, str(RUNNER)], env=environment, capture_output=True, text=True, timeout=60
    )


def test_return_value_comes_back_and_output_passes_through(tmp_path: Path) -> None:
    done = _run(tmp_path, "module:jobmod:add", encode_call((2,), {"b": 40}))
    lines = done.stdout.splitlines()

    assert done.returncode == 0
    assert lines[0] == "adding 2 40"
    assert is_protocol_line(lines[-1]) and lines[-1].startswith(OUTCOME_PREFIX)
    assert parse_outcome(lines).unwrap() == 42


def test_outcome_line_starts_on_its_own_line_after_partial_output(tmp_path: Path) -> None:
    done = _run(tmp_path, "module:jobmod:shout_partial")
    lines = done.stdout.splitlines()
    assert lines[0] == "no newline at the end"
    assert parse_outcome(lines).unwrap() == "done"


def test_remote_exception_is_raised_as_its_own_type_with_the_remote_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _run(tmp_path, "module:jobmod:reject", encode_call(("x",)))
    assert done.returncode == 1
    assert "to stderr" in done.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    import jobmod  # type: ignore[import-not-found]

    with pytest.raises(jobmod.BadInput, match=r"bad input 'x'") as caught:
        parse_outcome(done.stdout.splitlines()).unwrap()
    assert "Remote traceback" in caught.value.__notes__[0]
    assert 'jobmod.py", line' in caught.value.__notes__[0]
    assert "in reject" in str(caught.value.__cause__)


def test_exception_whose_class_is_unknown_here_becomes_remote_error(tmp_path: Path) -> None:
    done = _run(tmp_path, "module:remote_jobmod:reject", encode_call((1,)), module="remote_jobmod")
    # remote_jobmod is not importable in this process, so the exception cannot be rebuilt.
    with pytest.raises(RemoteError, match=r"remote_jobmod.BadInput: bad input 1") as caught:
        parse_outcome(done.stdout.splitlines()).unwrap()
    assert "in reject" in caught.value.remote_traceback


def test_pickled_function_with_lambda_argument(tmp_path: Path) -> None:
    pickled = tmp_path / "function.pkl"
    pickled.write_bytes(cloudpickle.dumps(lambda f, x: f(x) * 2))
    done = _run(tmp_path, f"pickle:{pickled}", encode_call((lambda v: v + 1, 4)))
    assert parse_outcome(done.stdout.splitlines()).unwrap() == 10


def test_script_entry_runs_as_main_and_returns_none(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("if __name__ == '__main__':\n    print('ran as main')\n")
    done = _run(tmp_path, f"script:{script}")
    assert done.stdout.splitlines()[0] == "ran as main"
    assert parse_outcome(done.stdout.splitlines()).unwrap() is None


def test_unpicklable_return_value_is_reported_as_an_error(tmp_path: Path) -> None:
    done = _run(tmp_path, "module:jobmod:unpicklable_result")
    assert done.returncode == 1
    with pytest.raises(TypeError, match=r"returned a value that cannot be pickled"):
        parse_outcome(done.stdout.splitlines()).unwrap()


def test_sys_exit_in_the_function_is_reported_not_raised_here(tmp_path: Path) -> None:
    done = _run(tmp_path, "module:jobmod:leave")
    assert done.returncode == 1
    with pytest.raises(RemoteError, match=r"builtins.SystemExit: 3"):
        parse_outcome(done.stdout.splitlines()).unwrap()


def test_missing_outcome_line_is_result_missing_with_the_last_lines() -> None:
    with pytest.raises(ResultMissing, match=r"without reporting an outcome") as caught:
        parse_outcome(["epoch 1", "epoch 2\n", "Killed"])
    assert caught.value.last_lines == ("epoch 1", "epoch 2", "Killed")


def test_damaged_outcome_line_is_result_missing() -> None:
    with pytest.raises(ResultMissing, match=r"damaged"):
        parse_outcome([OUTCOME_PREFIX + "not-base64!!"])
    cut = OUTCOME_PREFIX + base64.b64encode(b'{"ok": true, "val').decode()
    with pytest.raises(ResultMissing, match=r"damaged"):
        parse_outcome([cut])


def test_call_that_cannot_travel_in_an_environment_variable_is_refused() -> None:
    with pytest.raises(CallNotEncodable, match=f"at most {MAX_CALL_BYTES}"):
        encode_call((b"x" * MAX_CALL_BYTES,))
    import threading

    with pytest.raises(CallNotEncodable, match=r"cannot be pickled"):
        encode_call((threading.Lock(),))
