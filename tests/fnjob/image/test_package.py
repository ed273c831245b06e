"""The preprocessor: which functions ship as source, which are pickled; files, notebooks."""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import pytest

from fnjob.image.package import (
    CodePackage,
    UnshippableFunction,
    package_file,
    package_function,
    package_notebook,
    read_content,
)
from tests.fnjob.buildkit import import_sample


def test_module_level_function_ships_as_source_with_its_sibling_imports() -> None:
    train_module = import_sample("train_module")
    package = package_function(train_module.train)

    assert package.entry == "module:train_module:train"
    assert not package.needs_exact_python
    assert set(package.files) == {"train_module.py", "helper_module.py"}
    assert package.files["train_module.py"] == Path(train_module.__file__).read_bytes()
    assert package.description == "train_module.train (source)"


def test_function_in_a_package_ships_the_whole_top_level_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mlpkg" / "models").mkdir(parents=True)
    (tmp_path / "mlpkg" / "__init__.py").write_text("")
    (tmp_path / "mlpkg" / "models" / "__init__.py").write_text("")
    (tmp_path / "mlpkg" / "models" / "fit.py").write_text(
        "from mlpkg.util import double\n\ndef fit(x):\n    return double(x)\n"
    )
    (tmp_path / "mlpkg" / "util.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / "mlpkg" / "notes.txt").write_text("not code")
    monkeypatch.syspath_prepend(str(tmp_path))
    from mlpkg.models import fit  # type: ignore[import-not-found]

    package = package_function(fit.fit)
    assert package.entry == "module:mlpkg.models.fit:fit"
    assert set(package.files) == {
        "mlpkg/__init__.py",
        "mlpkg/models/__init__.py",
        "mlpkg/models/fit.py",
        "mlpkg/util.py",
    }


def test_closures_and_lambdas_are_pickled_and_need_the_same_python() -> None:
    factor = 3

    def scale(x: int) -> int:
        return x * factor

    for func in (scale, lambda x: x + 1):
        package = package_function(func)
        assert package.needs_exact_python
        assert package.entry == "pickle:fnjob_function.pkl"
        restored = pickle.loads(package.files["fnjob_function.pkl"])
        assert restored(2) == func(2)


def test_installed_library_function_is_referenced_not_copied() -> None:
    package = package_function(json.dumps)
    assert package.entry == "module:json:dumps"
    assert package.files == {}


def test_unpicklable_function_is_refused_with_a_hint() -> None:
    lock = threading.Lock()

    def hold() -> None:
        with lock:
            pass

    with pytest.raises(UnshippableFunction, match=r"define it at module level in a .py file"):
        package_function(hold)


def test_not_callable_is_refused() -> None:
    with pytest.raises(UnshippableFunction, match=r"is not callable"):
        package_function(42)  # type: ignore[arg-type]


def test_extra_files_and_folders_and_requirements(tmp_path: Path) -> None:
    (tmp_path / "assets" / "__pycache__").mkdir(parents=True)
    (tmp_path / "assets" / "labels.txt").write_text("cat\ndog\n")
    (tmp_path / "assets" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (tmp_path / "vocab.json").write_text("{}")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# pinned\nnumpy==2.1.0\n\npandas==2.2.3\n")
    train_module = import_sample("train_module")

    package = package_function(
        train_module.train,
        extra_files=[tmp_path / "assets", tmp_path / "vocab.json"],
        requirements=requirements,
    )
    assert read_content(package.files["assets/labels.txt"]) == b"cat\ndog\n"
    assert read_content(package.files["vocab.json"]) == b"{}"
    assert not any("__pycache__" in path for path in package.files)
    assert package.requirements == ("numpy==2.1.0", "pandas==2.2.3")
    assert package_function(train_module.train, requirements=["torch==2.5.1"]).requirements == (
        "torch==2.5.1",
    )


def test_missing_extra_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnshippableFunction, match=r"does not exist"):
        package_function(import_sample("train_module").train, extra_files=[tmp_path / "nope"])


def test_python_file_with_entry_function_or_as_script(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("K = 5\n")
    script = tmp_path / "my-job.py"
    script.write_text("import helpers\n\ndef main(n):\n    return n * helpers.K\n")

    called = package_file(script, function="main")
    assert called.entry == "module:my_job:main"
    assert set(called.files) == {"my_job.py", "helpers.py"}

    as_script = package_file(script)
    assert as_script.entry == "script:my_job.py"


def test_python_file_without_the_function_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("def main():\n    pass\n")
    with pytest.raises(UnshippableFunction, match=r"defines no top-level function 'train'"):
        package_file(script, function="train")
    script.write_text("def broken(:\n")
    with pytest.raises(UnshippableFunction, match=r"is not valid Python"):
        package_file(script, function="broken")


def _notebook(path: Path) -> Path:
    cells = [
        {"cell_type": "markdown", "source": ["# Title"]},
        {"cell_type": "code", "source": ["%pip install numpy\n", "import math\n"]},
        {"cell_type": "code", "source": "!nvidia-smi\ndef area(r):\n    return math.pi * r * r\n"},
        {"cell_type": "code", "source": ["%%bash\n", "echo hi\n"]},
        {"cell_type": "code", "source": ["print(area(1))\n"]},
    ]
    path.write_text(json.dumps({"nbformat": 4, "cells": cells}))
    return path


def test_notebook_code_cells_become_a_module_with_magics_commented_out(tmp_path: Path) -> None:
    package = package_notebook(_notebook(tmp_path / "Train Model.ipynb"), function="area")

    assert package.entry == "module:Train_Model:area"
    source = package.files["Train_Model.py"].decode()
    assert "# fnjob skipped IPython line: %pip install numpy" in source
    assert "# fnjob skipped IPython line: !nvidia-smi" in source
    assert "# fnjob skipped IPython line: echo hi" in source
    assert "# Title" not in source
    namespace: dict[str, object] = {}
    exec(compile(source, "nb", "exec"), namespace)  # the module really runs
    assert namespace["area"](1) == pytest.approx(3.14159, rel=1e-4)  # type: ignore[operator]


def test_notebook_without_function_runs_all_cells(tmp_path: Path) -> None:
    assert package_notebook(_notebook(tmp_path / "nb.ipynb")).entry == "script:nb.py"


def test_code_package_validates_its_fields() -> None:
    with pytest.raises(ValueError, match=r"files: path '../x.py'"):
        CodePackage(files={"../x.py": b""}, entry="module:x:f", needs_exact_python=False)
    with pytest.raises(ValueError, match=r"entry: 'run:x'"):
        CodePackage(files={}, entry="run:x", needs_exact_python=False)
    with pytest.raises(ValueError, match=r"names a file that is not in files"):
        CodePackage(files={}, entry="pickle:f.pkl", needs_exact_python=True)
    with pytest.raises(ValueError, match=r"source_python: '3'"):
        CodePackage(files={}, entry="module:x:f", needs_exact_python=False, source_python="3")
    package = CodePackage(files={"a.py": b""}, entry="module:a:f", needs_exact_python=False)
    with pytest.raises(TypeError):
        package.files["b.py"] = b""  # type: ignore[index]


def test_by_value_pickles_an_importable_function_and_still_ships_its_siblings() -> None:
    train_module = import_sample("train_module")
    package = package_function(train_module.train, by_value=True)

    assert package.needs_exact_python
    assert package.entry == "pickle:fnjob_function.pkl"
    assert {"helper_module.py", "train_module.py"} <= set(package.files)
    # By value: the pickle does not just name train_module.train.
    assert b"training with lr=" in package.files["fnjob_function.pkl"]


def test_module_importing_fnjob_ships_as_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notebook_job.py").write_text(
        "from fnjob import job\n\n@job(base_image='b', registry='r.example')\n"
        "def fit(x):\n    return x + 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import notebook_job  # type: ignore[import-not-found]

    # Decorated with @job: the module's name still finds the function (as __wrapped__).
    package = package_function(notebook_job.fit.local)
    assert package.entry == "module:notebook_job:fit"
    assert not package.needs_exact_python


# -- symlinks in shipped folders ---------------------------------------------------------------


@pytest.fixture
def fake_home(tmp_path: Path) -> Path:
    """A home folder with secrets a link could point at."""
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text('{"auths": {"reg": {"auth": "c2VjcmV0"}}}')
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text("aws_secret_access_key = SECRET\n")
    return home


def test_link_out_of_an_extra_folder_is_refused_naming_it(tmp_path: Path, fake_home: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "labels.txt").write_text("cat\n")
    (assets / "registry.json").symlink_to(fake_home / ".docker" / "config.json")
    train = import_sample("train_module").train

    with pytest.raises(
        UnshippableFunction, match=r"assets/registry.json' is a symlink to .*outside"
    ):
        package_function(train, extra_files=[assets])
    (assets / "registry.json").unlink()
    # Relative links that climb out are refused the same way.
    (assets / "up.json").symlink_to(Path("..") / "home" / ".docker" / "config.json")
    with pytest.raises(UnshippableFunction, match=r"assets/up.json"):
        package_function(train, extra_files=[assets])


def test_symlinked_folder_is_refused_not_silently_dropped(tmp_path: Path, fake_home: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "aws").symlink_to(fake_home / ".aws", target_is_directory=True)
    with pytest.raises(UnshippableFunction, match=r"assets/aws' is a symlink to .*\.aws"):
        package_function(import_sample("train_module").train, extra_files=[assets])


def test_links_inside_the_folder_ship_as_links(tmp_path: Path) -> None:
    import gzip
    import io
    import tarfile

    from fnjob.image.layer import code_layer

    data = tmp_path / "data"
    (data / "v2").mkdir(parents=True)
    (data / "v2" / "train.csv").write_text("x,y\n1,2\n")
    (data / "latest.csv").symlink_to(Path("v2") / "train.csv")
    (data / "current").symlink_to(data / "v2", target_is_directory=True)  # absolute, inside
    package = package_function(import_sample("train_module").train, extra_files=[data])

    assert read_content(package.files["data/v2/train.csv"]) == b"x,y\n1,2\n"
    assert dict(package.links) == {"data/latest.csv": "v2/train.csv", "data/current": "v2"}
    assert "data/latest.csv" not in package.files
    layer = code_layer(package)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob.read_bytes()))) as archive:
        link = archive.getmember("fnjob/app/data/latest.csv")
        folder_link = archive.getmember("fnjob/app/data/current")
    assert link.issym() and link.linkname == "v2/train.csv"
    assert folder_link.issym() and folder_link.linkname == "v2"


def test_code_package_refuses_links_that_leave_the_app() -> None:
    with pytest.raises(ValueError, match=r"must be relative and stay inside"):
        CodePackage(
            files={"job.py": b""},
            entry="module:job:f",
            needs_exact_python=False,
            links={"data/key": "../../root/.ssh/id_rsa"},
        )


# -- pickles are the same in every process -----------------------------------------------------

NOTEBOOK_STYLE = """
import json
import sys
from dataclasses import dataclass
from enum import Enum

from fnjob.image.layer import append_layer
from fnjob.image.package import package_function


class Scaler:
    kinds = {"linear", "log", "sqrt"}

    def __init__(self, factor):
        self.factor = factor


@dataclass
class Settings:
    lr: float = 0.1


class Mode(Enum):
    TRAIN = "train"


def score(x):
    if x in {"alpha", "beta", "gamma"}:
        return None
    return Scaler(2).factor * x, Settings().lr, Mode.TRAIN


base_manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": "sha256:" + "0" * 64,
        "size": 2,
    },
    "layers": [],
}
base_config = {"rootfs": {"type": "layers", "diff_ids": []}, "config": {}}
package = package_function(score)
assert package.entry.startswith("pickle:"), package.entry
print(append_layer(base_manifest, base_config, package).digest)
"""


def test_notebook_style_pickle_has_the_same_digest_in_every_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "notebook_style.py"
    script.write_text(NOTEBOOK_STYLE)
    digests = set()
    for seed in ("1", "2", "random"):
        completed = subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr
        digests.add(completed.stdout.strip())
    assert len(digests) == 1, digests


def test_notebook_cells_from_other_kernels_pickle_alike() -> None:
    source = "def area(r):\n    return 3.14159 * r * r\n"
    pickles = []
    for pid in (1234, 98765):
        namespace: dict[str, object] = {"__name__": "__main__"}
        exec(compile(source, f"/tmp/ipykernel_{pid}/2847561.py", "exec"), namespace)
        package = package_function(namespace["area"])  # type: ignore[arg-type]
        pickles.append(package.files["fnjob_function.pkl"])
    assert pickles[0] == pickles[1]
    assert b"ipykernel" not in pickles[0]


def test_arguments_pickled_later_name_the_same_class_as_the_function() -> None:
    import cloudpickle

    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("class Box:\n    pass\n\ndef is_box(x):\n    return isinstance(x, Box)\n", namespace)
    package = package_function(namespace["is_box"])  # type: ignore[arg-type]
    argument = cloudpickle.dumps(namespace["Box"]())  # type: ignore[operator]
    # In a fresh process both pickles must resolve to one class.
    check = (
        "import pickle, sys\n"
        "function = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
        "print(function(pickle.loads(bytes.fromhex(sys.argv[2]))))\n"
    )
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", check, package.files["fnjob_function.pkl"].hex(), argument.hex()],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.stdout.strip() == "True", completed.stderr
