"""Text that lists catalog facts is generated from the catalog (model/gpu_instances.yaml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from model import EksGpuGroup, catalog

ROOT = Path(__file__).resolve().parents[2]


def test_instance_types_description_names_the_catalogs_families() -> None:
    description = EksGpuGroup.model_fields["instance_types"].description
    assert description is not None
    assert description.endswith(f"({', '.join(catalog.gpu_families())})")


def test_a_family_added_to_the_catalog_reaches_the_description(tmp_path: Path) -> None:
    table = yaml.safe_load((ROOT / "model" / "gpu_instances.yaml").read_text())
    table["families"]["g7x"] = {
        "architecture": "x86_64",
        "gpuModel": "NVIDIA Future",
        "gpuMemoryGiB": 96,
        "acceleratorLabel": "nvidia-future",
        "sizes": {"xlarge": 1},
    }
    changed = tmp_path / "gpu_instances.yaml"
    changed.write_text(yaml.safe_dump(table, sort_keys=False))
    # A fresh interpreter: the model's field descriptions are made when it is imported.
    script = (
        "import pathlib, sys\n"
        "read = pathlib.Path.read_text\n"
        "def changed(path, *args, **kwargs):\n"
        "    if path.name == 'gpu_instances.yaml':\n"
        "        path = pathlib.Path(sys.argv[1])\n"
        "    return read(path, *args, **kwargs)\n"
        "pathlib.Path.read_text = changed\n"
        "from model import EksGpuGroup\n"
        "print(EksGpuGroup.model_fields['instance_types'].description)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script, str(changed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "p6-b300, g7x)" in shown
