"""Finding the base image's Python and deciding whether a package can run on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fnjob.image.package import CodePackage
from fnjob.image.pythonversion import (
    DEFAULT_PATH,
    PythonVersionMismatch,
    TarMember,
    check_python,
    declared_python,
    find_python,
    path_dirs,
)

SYM, HARD, FILE, DIR = b"2", b"1", b"0", b"5"


def _package(pickled: bool, source: bytes = b"def f():\n    return 1\n") -> CodePackage:
    if pickled:
        return CodePackage(
            files={"fnjob_function.pkl": b"x"},
            entry="pickle:fnjob_function.pkl",
            needs_exact_python=True,
            source_python="3.11",
            description="<lambda> (pickled)",
        )
    return CodePackage(
        files={"job.py": source},
        entry="module:job:f",
        needs_exact_python=False,
        source_python="3.11",
    )


def test_python_version_env_of_official_images_is_used() -> None:
    config = {"config": {"Env": ["PATH=/usr/local/bin", "PYTHON_VERSION=3.12.7"]}}
    assert declared_python(config) == ("3.12", "ENV PYTHON_VERSION")
    assert declared_python({"config": {"Env": ["PATH=/bin"]}}) is None


def test_the_python_label_and_the_build_history_declare_the_python() -> None:
    labelled = {"config": {"Labels": {"io.kubeflow-eks.python-version": "3.10"}}}
    assert declared_python(labelled) == ("3.10", "label io.kubeflow-eks.python-version")
    history = {
        "config": {"Env": ["PATH=/bin"]},
        "history": [
            {"created_by": "ARG PYTHON_VERSION=3.9"},
            {"created_by": "|1 PYTHON_VERSION=3.11 /bin/sh -c conda install python=3.11"},
            {"created_by": "RUN pip install torch", "empty_layer": False},
        ],
    }
    # The newest entry that names it wins; the environment beats the label and the history.
    assert declared_python(history) == ("3.11", "build history")
    both = {**history, "config": {"Env": ["PYTHON_VERSION=3.12"], **labelled["config"]}}
    assert declared_python(both) == ("3.12", "ENV PYTHON_VERSION")


def _find(
    *layers_newest_first: list[tuple[str, str, bytes]], path: str = DEFAULT_PATH
) -> str | None:
    dirs = path_dirs({"config": {"Env": [f"PATH={path}"]}})
    return find_python(
        ([TarMember(*member) for member in layer] for layer in layers_newest_first), dirs
    )


def test_debian_layout_with_launcher_symlink() -> None:
    layer = [
        ("./usr/bin/python3", "python3.11", SYM),
        ("./usr/bin/python3.11", "", FILE),
        ("./usr/lib/python3.11/os.py", "", FILE),
        ("./usr/lib/python3/dist-packages/", "", DIR),
    ]
    assert _find(layer) == "3.11"


def test_the_earliest_path_folder_with_a_python3_wins() -> None:
    layer = [
        ("usr/bin/python3", "python3.9", SYM),
        ("usr/lib/python3.9/os.py", "", FILE),
        ("usr/local/bin/python3", "python3.12", SYM),
        ("usr/local/lib/python3.12/os.py", "", FILE),
    ]
    assert _find(layer[2:], layer[:2]) == "3.12"
    # The image's own PATH decides (conda images put /opt/conda/bin first).
    conda = [("opt/conda/bin/python3", "python3.10", SYM)]
    assert _find(conda, layer, path="/opt/conda/bin:/usr/local/bin:/usr/bin") == "3.10"


def test_alternatives_chains_hard_links_and_plain_binaries_are_resolved() -> None:
    alternatives = [
        ("usr/bin/python3", "/etc/alternatives/python3", SYM),
        ("etc/alternatives/python3", "/usr/bin/python3.10", SYM),
    ]
    assert _find(alternatives) == "3.10"
    assert _find([("usr/bin/python3", "usr/bin/python3.8", HARD)]) == "3.8"
    venv_copy = [("venv/bin/python3", "", FILE), ("venv/lib/python3.13/os.py", "", FILE)]
    assert _find(venv_copy, path="/venv/bin:/usr/bin") == "3.13"


def test_whiteouts_in_newer_layers_hide_older_pythons() -> None:
    newer = [("usr/local/bin/.wh.python3", "", FILE)]
    older = [
        ("usr/local/bin/python3", "python3.12", SYM),
        ("usr/bin/python3", "python3.11", SYM),
    ]
    assert _find(newer, older) == "3.11"
    assert _find([("usr/.wh..wh..opq", "", FILE)], older) is None


def test_reading_stops_as_soon_as_the_answer_is_known() -> None:
    read: list[str] = []

    def layer(name: str, members: list[tuple[str, str, bytes]]):  # type: ignore[no-untyped-def]
        for member in members:
            read.append(f"{name}:{member[0]}")
            yield TarMember(*member)

    newest = layer("top", [("usr/local/bin/python3", "python3.12", SYM), ("app/x", "", FILE)])
    oldest = layer("bottom", [("usr/bin/python3", "python3.11", SYM)])
    assert find_python([newest, oldest], path_dirs({})) == "3.12"
    # Not even the rest of the newest layer was read, and the older one never.
    assert read == ["top:usr/local/bin/python3"]


def test_no_python_at_all() -> None:
    assert _find([("bin/sh", "", FILE), ("usr/lib/python3/dist-packages/x.py", "", FILE)]) is None


def test_pickled_function_needs_the_same_major_minor() -> None:
    check_python(_package(pickled=True), "3.11", "base")
    with pytest.raises(
        PythonVersionMismatch, match=r"pickled with Python 3.11 but base image base has Python 3.12"
    ) as caught:
        check_python(_package(pickled=True), "3.12", "base")
    assert (caught.value.base_python, caught.value.local_python) == ("3.12", "3.11")


def test_source_runs_on_other_pythons_whose_grammar_accepts_it() -> None:
    check_python(_package(pickled=False), "3.9", "base")
    check_python(_package(pickled=False), "3.13", "base")
    walrus_in_f_string = b"def f(x):\n    return f'{(y := x)}'\n"
    check_python(_package(False, walrus_in_f_string), "3.8", "base")
    with pytest.raises(PythonVersionMismatch, match=r"job.py:\d+: "):
        check_python(
            _package(False, b"def f(x):\n    match x:\n        case _:\n            return 1\n"),
            "3.9",
            "base",
        )


def test_too_old_or_missing_python_is_refused() -> None:
    with pytest.raises(PythonVersionMismatch, match=r"fnjob needs at least 3.7"):
        check_python(_package(pickled=False), "3.6", "base")
    with pytest.raises(PythonVersionMismatch, match=r"has no python3"):
        check_python(_package(pickled=False), None, "base")


def _tar(format_: int, compress: bool) -> bytes:
    import gzip
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format_) as archive:
        for name, data in [
            ("usr/lib/python3.12/os.py", b"# os\n" * 300),
            ("opt/" + "very-long-directory-name/" * 6 + "file.txt", b"x" * 1000),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("usr/local/bin/python3")
        link.type = tarfile.SYMTYPE
        link.linkname = "python3.12"
        archive.addfile(link)
        folder = tarfile.TarInfo("usr/local/lib/python3.12/")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
    data = buffer.getvalue()
    return gzip.compress(data) if compress else data


@pytest.mark.parametrize("format_", [0, 1, 2])  # USTAR (prefix field), GNU longname, PAX
@pytest.mark.parametrize("compress", [True, False])
def test_tar_headers_are_read_like_tarfile_reads_them(format_: int, compress: bool) -> None:
    import io
    import tarfile

    from fnjob.image.pythonversion import tar_members

    data = _tar(format_, compress)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        expected = [(member.name, member.linkname, member.type) for member in archive.getmembers()]
    chunks = [data[i : i + 333] for i in range(0, len(data), 333)]  # awkward chunk sizes

    assert [tuple(member) for member in tar_members(chunks)] == expected
    assert find_python([tar_members(chunks)], path_dirs({})) == "3.12"


def test_truncated_layer_is_refused() -> None:
    import tarfile

    from fnjob.image.pythonversion import tar_members

    data = _tar(tarfile.PAX_FORMAT, compress=True)
    with pytest.raises(ValueError, match="ended before the end"):
        list(tar_members([data[: len(data) // 2]]))


def test_hint_for_a_function_of_the_script_being_run_names_fnjob_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "from fnjob.image.package import package_function\n"
        "from fnjob.image.pythonversion import PythonVersionMismatch, check_python\n\n"
        "def main():\n    return 1\n\n"
        "try:\n    check_python(package_function(main), '3.9', 'python:3.9')\n"
        "except PythonVersionMismatch as error:\n    print(error)\n"
    )
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=False, timeout=60
    )
    message = completed.stdout
    assert "main is defined in the script being run (train.py)" in message, completed.stderr
    assert "fnjob run train.py --function main" in message
    # The old advice was wrong here: main already is at module level in a .py file.
    assert "define the function at module level" not in message
