"""The append builder at real sizes, against the real registry: memory that stays flat
whatever the payload, few round trips, and a base's Python read from its config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fnjob.image.auth import Credentials
from fnjob.image.builders import AppendBuilder
from fnjob.image.layer import OCI_CONFIG, OCI_MANIFEST, sha256_digest
from fnjob.image.package import package_function
from fnjob.image.registry import RegistryClient
from tests.fnjob.buildkit import SAMPLE_DIR, EventLog, import_sample
from tests.fnjob.conftest import REPO_ROOT, RegistryServer
from tests.fnjob.registry_proxy import RegistryProxy

pytestmark = pytest.mark.real

MiB = 1 << 20

# Runs in its own process: its peak RSS over the build minus its RSS after the imports.
# VmHWM (reset by clear_refs) rather than getrusage's ru_maxrss, which Linux carries over
# from the parent across fork and exec, so a big pytest process would hide the child's peak.
_BUILD_AND_MEASURE = textwrap.dedent(
    """
    import json, re, sys
    sys.path[:0] = [sys.argv[1]]
    from fnjob.image.builders import AppendBuilder
    from fnjob.image.package import package_function
    import train_module

    def peak():
        with open("/proc/self/status") as status:
            return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) * 1024

    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = peak()
    package = package_function(train_module.train, extra_files=[sys.argv[2]])
    built = AppendBuilder(sys.argv[3], base_python="3.11", cache_dir=sys.argv[5]).build(
        package, sys.argv[4]
    )
    print(json.dumps({"before": before, "after": peak(), "digest": built.digest}))
    """
)


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[RegistryProxy]:
    front = RegistryProxy(upstream=registry.host)
    front.start()
    yield front
    front.stop()


def test_build_memory_stays_flat_for_a_payload_much_larger_than_the_bound(
    registry: RegistryServer, python_base: str, tmp_path: Path
) -> None:
    payload = tmp_path / "dataset"
    payload.mkdir()
    for index in range(6):  # 384 MiB that gzip cannot shrink
        with (payload / f"shard-{index}.bin").open("wb") as shard:
            for _ in range(8):
                shard.write(os.urandom(8 * MiB))
    target = f"{registry.host}/scale/dataset"
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _BUILD_AND_MEASURE,
            str(SAMPLE_DIR),
            str(payload),
            python_base,
            target,
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "fnjob")},
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    measured = json.loads(completed.stdout.strip().splitlines()[-1])

    growth = measured["after"] - measured["before"]
    # The bound is 100 MiB whatever the payload; 384 MiB held once would already exceed this.
    assert growth < 150 * MiB, f"peak RSS grew by {growth / MiB:.0f} MiB"
    manifest = registry.manifest("scale/dataset", measured["digest"]).json()
    assert manifest["layers"][-1]["size"] > 384 * MiB


def test_a_cold_build_takes_at_most_nine_requests_and_a_warm_one_six(
    registry: RegistryServer, python_base: str, proxy: RegistryProxy, tmp_path: Path
) -> None:
    base = python_base.replace(registry.host, proxy.host)
    package = package_function(import_sample("train_module").train)
    builder = AppendBuilder(base, cache_dir=tmp_path)
    builder.resolve_base()  # the base's Python is cached, as for every build but the first
    proxy.seen.clear()

    events = EventLog()
    AppendBuilder(base, cache_dir=tmp_path, progress=events).build(
        package, f"{proxy.host}/rounds/cold"
    )
    cold = [(seen.method, seen.path.split("?")[0].rsplit("/", 2)[-2]) for seen in proxy.seen]
    proxy.seen.clear()
    builder.build(package, f"{proxy.host}/rounds/cold")
    warm = len(proxy.seen)

    assert len(cold) <= 9, cold
    # The base layer is mounted, and the small blobs go up in one PUT each (no PATCH).
    assert len(events.stages("mount")) == 1
    assert not any(method == "PATCH" for method, _ in cold)
    assert warm <= 6, [(seen.method, seen.path) for seen in proxy.seen]


def _labelled_base(registry: RegistryServer, labels: dict[str, str]) -> str:
    """The test base with labels in its config (as the stack's images declare their
    Python) and no PYTHON_VERSION, pushed as fnjob-base/labelled:v1."""
    base_manifest = registry.manifest("fnjob-base/python", "3.11").json()
    config = requests.get(
        f"{registry.url}/v2/fnjob-base/python/blobs/{base_manifest['config']['digest']}",
        timeout=10,
    ).json()
    config["config"]["Labels"] = labels
    config_data = json.dumps(config).encode()
    manifest = {
        **base_manifest,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": sha256_digest(config_data),
            "size": len(config_data),
        },
    }
    with RegistryClient(registry.host, "fnjob-base/labelled", credentials=Credentials()) as client:
        assert client.mount_blob("fnjob-base/python", base_manifest["layers"][0]["digest"])
        client.push_blob(sha256_digest(config_data), lambda: iter([config_data]))
        client.put_manifest("v1", json.dumps(manifest).encode(), OCI_MANIFEST)
    return f"{registry.host}/fnjob-base/labelled:v1"


def test_a_python_declared_by_label_is_read_from_the_config_without_any_layer(
    registry: RegistryServer, python_base: str, proxy: RegistryProxy, tmp_path: Path
) -> None:
    base = _labelled_base(registry, {"io.kubeflow-eks.python-version": "3.11"})
    events = EventLog()
    built = AppendBuilder(
        base.replace(registry.host, proxy.host), cache_dir=tmp_path, progress=events
    ).build(package_function(import_sample("train_module").train), f"{proxy.host}/label/job")

    assert (built.python_version, built.python_found_in) == (
        "3.11",
        "label io.kubeflow-eks.python-version",
    )
    assert built.base_bytes_read == 0
    layer = registry.manifest("fnjob-base/labelled", "v1").json()["layers"][0]["digest"]
    assert proxy.count("GET", f"/blobs/{layer}") == 0
    # The progress says where the Python came from and what it cost.
    [report] = [e for e in events.stages("check-python") if e.detail.startswith("Python")]
    assert report.detail == "Python 3.11 from label io.kubeflow-eks.python-version"
    assert report.bytes_done == 0
