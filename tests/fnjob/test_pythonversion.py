"""Finding the base image's Python and deciding whether a package can run on it."""

from __future__ import annotations

import pytest

from fnjob.package import CodePackage
from fnjob.pythonversion import PythonVersionMismatch, check_python, python_from_config, scan_names


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
    assert python_from_config(config) == "3.12"
    assert python_from_config({"config": {"Env": ["PATH=/bin"]}}) is None


def test_debian_layout_with_launcher_symlink() -> None:
    names = [
        ("./usr/bin/python3", "python3.11"),
        ("./usr/bin/python3.11", ""),
        ("./usr/lib/python3.11/os.py", ""),
        ("./usr/lib/python3/dist-packages/", ""),
    ]
    assert scan_names(names) == "3.11"


def test_usr_local_python_wins_over_the_distributions() -> None:
    names = [
        ("usr/bin/python3", "python3.9"),
        ("usr/lib/python3.9/os.py", ""),
        ("usr/local/bin/python3", "python3.12"),
        ("usr/local/lib/python3.12/os.py", ""),
    ]
    assert scan_names(names) == "3.12"


def test_no_python_at_all() -> None:
    assert scan_names([("bin/sh", ""), ("usr/lib/python3/dist-packages/x.py", "")]) is None


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

    from fnjob.pythonversion import tar_members

    data = _tar(format_, compress)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        expected = [(member.name, member.linkname) for member in archive.getmembers()]
    chunks = [data[i : i + 333] for i in range(0, len(data), 333)]  # awkward chunk sizes

    assert list(tar_members(chunks)) == expected
    assert scan_names(tar_members(chunks)) == "3.12"


def test_truncated_layer_is_refused() -> None:
    import tarfile

    from fnjob.pythonversion import tar_members

    data = _tar(tarfile.PAX_FORMAT, compress=True)
    with pytest.raises(ValueError, match="ended before the end"):
        list(tar_members([data[: len(data) // 2]]))
