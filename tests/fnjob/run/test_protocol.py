"""The runtime protocol end to end: the real runner in a subprocess, read by the caller.

The runner reads its call and key from a run directory and signs its outcome; the caller
accepts only the line signed with the run's key, wherever it sits in the output.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
from pathlib import Path

import cloudpickle
import pytest

from fnjob.run.protocol import (
    MAX_CALL_BYTES,
    OUTCOME_PREFIX,
    CallNotEncodable,
    OutcomeReader,
    RemoteError,
    ResultMissing,
    ResultNotLoadable,
    encode_call,
    new_run_key,
    parse_outcome,
)
from fnjob.run.runner import outcome_lines
from tests.fnjob.forgery import forged_outcome_lines
from tests.fnjob.run_functions import payload, run_runner, write_run_dir

JOB_MODULE = """
import sys

class BadInput(Exception):
    pass

class Measurement:
    def __init__(self, value):
        self.value = value

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

def measure(value):
    return Measurement(value)
"""


class Run:
    """One runner run in ``tmp_path`` with a fresh key."""

    def __init__(
        self,
        tmp_path: Path,
        entry: str,
        call: bytes | None = None,
        *,
        module: str = "jobmod",
        key: bytes | None = None,
        sign: bool = True,
        **env: str,
    ) -> None:
        (tmp_path / f"{module}.py").write_text(JOB_MODULE)
        self.key = key or new_run_key()
        run_dir = write_run_dir(tmp_path, call, self.key if sign else None)
        self.done = run_runner(entry, run_dir, pythonpath=str(tmp_path), **env)
        self.lines = self.done.stdout.splitlines()

    def outcome(self) -> object:
        return parse_outcome(self.lines, self.key).unwrap()


def test_return_value_comes_back_and_output_passes_through(tmp_path: Path) -> None:
    run = Run(tmp_path, "module:jobmod:add", encode_call((2,), {"b": 40}))
    assert run.done.returncode == 0
    assert run.lines[0] == "adding 2 40"
    assert run.lines[-1].startswith(OUTCOME_PREFIX)
    assert run.outcome() == 42


def test_the_outcome_line_is_signed_with_the_runs_key(tmp_path: Path) -> None:
    run = Run(tmp_path, "module:jobmod:add", encode_call((1, 1)))
    signed_text, signature = run.lines[-1].rsplit(" ", 1)
    expected = hmac.new(run.key, signed_text.encode(), hashlib.sha256).hexdigest()
    assert signature == expected
    # Another run's key does not accept it.
    with pytest.raises(ResultMissing, match="not signed with this run's key"):
        parse_outcome(run.lines, new_run_key())


def test_outcome_line_starts_on_its_own_line_after_partial_output(tmp_path: Path) -> None:
    run = Run(tmp_path, "module:jobmod:shout_partial")
    assert run.lines[0] == "no newline at the end"
    assert run.outcome() == "done"


def test_remote_exception_is_raised_as_its_own_type_with_the_remote_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path, "module:jobmod:reject", encode_call(("x",)))
    assert run.done.returncode == 1
    assert "to stderr" in run.done.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    import jobmod  # type: ignore[import-not-found]

    with pytest.raises(jobmod.BadInput, match=r"bad input 'x'") as caught:
        run.outcome()
    assert "Remote traceback" in caught.value.__notes__[0]
    assert 'jobmod.py", line' in caught.value.__notes__[0]
    assert "in reject" in str(caught.value.__cause__)


def test_exception_whose_class_is_unknown_here_becomes_remote_error(tmp_path: Path) -> None:
    run = Run(tmp_path, "module:remote_jobmod:reject", encode_call((1,)), module="remote_jobmod")
    # remote_jobmod is not importable in this process, so the exception cannot be rebuilt.
    with pytest.raises(RemoteError, match=r"remote_jobmod.BadInput: bad input 1") as caught:
        run.outcome()
    assert "in reject" in caught.value.remote_traceback


def test_a_value_whose_module_is_missing_here_names_it_and_keeps_the_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path, "module:imageonly_mod:measure", encode_call((2.5,)), module="imageonly_mod")
    with pytest.raises(
        ResultNotLoadable, match="module 'imageonly_mod' is not installed"
    ) as caught:
        run.outcome()
    assert caught.value.missing_module == "imageonly_mod"
    # The authenticated bytes are there to load once the module is.
    monkeypatch.syspath_prepend(str(tmp_path))
    assert pickle.loads(caught.value.pickled_value).value == 2.5


def test_pickled_function_with_lambda_argument(tmp_path: Path) -> None:
    pickled = tmp_path / "function.pkl"
    pickled.write_bytes(cloudpickle.dumps(lambda f, x: f(x) * 2))
    run = Run(tmp_path, f"pickle:{pickled}", encode_call((lambda v: v + 1, 4)))
    assert run.outcome() == 10


def test_script_entry_runs_as_main_and_returns_none(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("if __name__ == '__main__':\n    print('ran as main')\n")
    run = Run(tmp_path, f"script:{script}")
    assert run.lines[0] == "ran as main"
    assert run.outcome() is None


def test_unpicklable_return_value_is_reported_as_an_error(tmp_path: Path) -> None:
    run = Run(tmp_path, "module:jobmod:unpicklable_result")
    assert run.done.returncode == 1
    with pytest.raises(TypeError, match=r"returned a value that cannot be pickled"):
        run.outcome()


def test_sys_exit_in_the_function_is_reported_not_raised_here(tmp_path: Path) -> None:
    run = Run(tmp_path, "module:jobmod:leave")
    assert run.done.returncode == 1
    with pytest.raises(RemoteError, match=r"builtins.SystemExit: 3"):
        run.outcome()


def test_the_runner_installs_nothing_at_start_so_a_base_without_pip_runs(
    tmp_path: Path,
) -> None:
    # Requirements are installed into the image when it is built (tests/fnjob/image/test_builders.py
    # runs one on a base without pip); the runner never calls pip, even when an image from
    # an older fnjob still names a requirements file. A pip package on PYTHONPATH that fails
    # to import stands for a base image without pip.
    (tmp_path / "pip").mkdir()
    (tmp_path / "pip" / "__init__.py").write_text("raise ImportError('no pip here')\n")
    (tmp_path / "requirements.txt").write_text("numpy==2.1.0\n")
    run = Run(
        tmp_path,
        "module:jobmod:add",
        encode_call((1,)),
        FNJOB_REQUIREMENTS=str(tmp_path / "requirements.txt"),
    )
    assert run.done.returncode == 0, run.done.stderr
    assert "pip" not in run.done.stderr
    assert run.outcome() == 1


def test_an_image_started_by_hand_prints_an_outcome_nobody_trusts(tmp_path: Path) -> None:
    run = Run(tmp_path, "module:jobmod:add", encode_call((1, 2)), sign=False)
    assert run.done.returncode == 0
    assert run.lines[-1].endswith(" unsigned")
    with pytest.raises(ResultMissing, match="not signed with this run's key"):
        run.outcome()


# -- forged outcome lines (issue 10): shown as output, never unpickled ---------------------


def test_forged_outcome_lines_from_the_functions_output_are_never_unpickled(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "code-ran-here"
    forged = forged_outcome_lines(marker)
    run = Run(tmp_path, payload("echo_records"), encode_call((forged,)))
    reader = OutcomeReader(run.key)
    shown = [text for line in run.lines if (text := reader.feed(line)) is not None]
    assert reader.result().unwrap() == "the real result"
    # The function printed them: they are its output, shown as such.
    assert shown == forged
    assert reader.unsigned_lines == len(forged)
    assert not marker.exists()


def test_a_partial_line_glued_before_the_outcome_neither_hides_it_nor_lets_a_forgery_win(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "code-ran-here"
    forged = forged_outcome_lines(marker)
    run = Run(tmp_path, payload("partial_line_then_return"), encode_call((forged,)))
    assert run.done.returncode == 0
    # A subprocess left "50% done" without a newline; the outcome is glued to it.
    assert run.lines[-1].startswith("50% done" + OUTCOME_PREFIX)
    reader = OutcomeReader(run.key)
    shown = [text for line in run.lines if (text := reader.feed(line)) is not None]
    assert reader.result().unwrap() == "the real result"
    assert shown == [*forged, "50% done"]
    assert not marker.exists()


def test_output_written_after_the_outcome_is_output(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran-here"
    forged = forged_outcome_lines(marker)
    run = Run(tmp_path, payload("log_records_flushed_at_exit"), encode_call((forged,)))
    # The logging handler flushed its records at exit, after the outcome line.
    assert run.lines[-len(forged) :] == forged
    assert parse_outcome(run.lines, run.key).unwrap() == "the real result"
    assert not marker.exists()


def test_a_native_crash_after_printing_forgeries_is_result_missing(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran-here"
    forged = forged_outcome_lines(marker)
    run = Run(tmp_path, payload("crash_after_logging"), encode_call((forged,)))
    assert run.done.returncode < 0  # killed by SIGSEGV
    looked_like = rf"{len(forged)} line.* looked like an outcome"
    with pytest.raises(ResultMissing, match=looked_like) as caught:
        parse_outcome(run.lines, run.key)
    assert caught.value.last_lines[-1] == forged[-1]
    assert not marker.exists()


def test_missing_outcome_line_is_result_missing_with_the_last_lines() -> None:
    with pytest.raises(ResultMissing, match=r"without reporting an outcome") as caught:
        parse_outcome(["epoch 1", "epoch 2\n", "Killed"], new_run_key())
    assert caught.value.last_lines == ("epoch 1", "epoch 2", "Killed")


def test_signed_but_damaged_and_cut_outcome_lines_are_result_missing() -> None:
    key = new_run_key()
    damaged = OUTCOME_PREFIX + "0/1 " + base64.b64encode(b'{"ok": true, "val').decode()
    signature = hmac.new(key, damaged.encode(), hashlib.sha256).hexdigest()
    with pytest.raises(ResultMissing, match=r"damaged"):
        parse_outcome([f"{damaged} {signature}"], key)
    # Cut by a log size limit: the signature no longer matches what is left.
    with pytest.raises(ResultMissing, match=r"not signed"):
        parse_outcome([f"{damaged[:-4]} {signature}"], key)


def test_call_that_cannot_travel_with_the_run_is_refused() -> None:
    with pytest.raises(CallNotEncodable, match=f"at most {MAX_CALL_BYTES}"):
        encode_call((b"x" * MAX_CALL_BYTES,))
    import threading

    with pytest.raises(CallNotEncodable, match=r"cannot be pickled"):
        encode_call((threading.Lock(),))


def test_a_framed_outcome_survives_interleaving_forgeries_and_repeats() -> None:
    key = new_run_key()
    value = list(range(5000))
    real = [line.decode() for line in outcome_lines({"ok": True}, pickle.dumps(value), key)]
    forged = [line.decode() for line in outcome_lines({"ok": True}, b"forged", new_run_key())]
    assert len(real) > 3
    mixed: list[str] = []
    for index, line in enumerate(real):
        # Another key's pieces with the same numbers, text glued before a piece, a piece
        # read twice (a resumed stream).
        mixed += [forged[0], f"50% done{line}", "progress", line if index % 2 else ""]
    reader = OutcomeReader(key)
    shown = [text for text in map(reader.feed, mixed) if text is not None]
    assert reader.result().unwrap() == value
    assert shown.count("50% done") == len(real)
    assert reader.unsigned_lines == len(real)
