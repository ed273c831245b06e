"""Append + push of a small function vs ``buildah bud`` + ``buildah push``, on a real registry.

Prints figures, asserts nothing. Starts its own ``docker-registry`` on 127.0.0.1 and uses the
cached ~50 MiB Debian Python base from the test fixtures (built with mmdebstrap on first use).

    .venv/bin/python benchmarks/bench_append.py [--repeats N]

Figures:
- append into a NEW repository (cross-repository mount of the base), with the base's Python
  version not yet cached (first build against a base) and cached (every later build);
- buildah bud + push of the equivalent Containerfile into a new repository, cold (fresh
  private storage: the base is pulled) and warm (base already in storage);
- bytes uploaded by append vs code layer + config + manifest;
- bytes uploaded when the unchanged code is pushed again;
- bytes downloaded to find a base's Python (no PYTHON_VERSION): reading every layer to its
  end (what fnjob did before) vs newest layer first, stopping once python3 on PATH is known;
  for the Debian base and for a base with a small Python layer on top of it (as CUDA
  images get Python on top of gigabytes of libraries).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchlib import BASE_REPOSITORY, scratch_registry

from fnjob.image.builders import AppendBuilder, docker_context
from fnjob.image.package import CodePackage, package_function
from fnjob.progress import ProgressEvent
from tests.fnjob.conftest import (
    PodmanConfig,
    RegistryServer,
    make_podman_config,
    release_podman_storage,
)

SMALL_FUNCTION = """
def train(lr=0.1, epochs=3):
    loss = 1.0
    for _ in range(epochs):
        loss *= 1 - lr
    return loss
"""


def _small_package(workdir: Path) -> CodePackage:
    module_dir = workdir / "code"
    module_dir.mkdir(exist_ok=True)
    (module_dir / "bench_train.py").write_text(SMALL_FUNCTION)
    sys.path.insert(0, str(module_dir))
    import bench_train  # type: ignore[import-not-found]

    return package_function(bench_train.train)


def _append(
    package: CodePackage, base: str, target: str, cache_dir: Path
) -> tuple[float, int | None, int, str]:
    uploads: list[str] = []

    def count_uploads(event: ProgressEvent) -> None:
        if event.stage == "upload" and event.bytes_done == 0:
            uploads.append(event.detail)

    started = time.perf_counter()
    built = AppendBuilder(base, cache_dir=cache_dir, progress=count_uploads).build(package, target)
    return time.perf_counter() - started, built.bytes_uploaded, len(uploads), built.digest


def _buildah(config: PodmanConfig, *args: str) -> None:
    completed = subprocess.run(
        ["buildah", *args], env=config.env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed: {completed.stderr[-2000:]}")


def _buildah_build_push(config: PodmanConfig, context: Path, target: str) -> float:
    started = time.perf_counter()
    _buildah(config, "bud", "--tls-verify=false", "--format", "oci", "-t", target, str(context))
    _buildah(config, "push", "--tls-verify=false", target, f"docker://{target}")
    return time.perf_counter() - started


def _context_dir(package: CodePackage, base: str, workdir: Path) -> Path:
    context = workdir / "context"
    context.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    docker_context(package, base, buffer)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        archive.extractall(context, filter="data")
    (context / "Containerfile").write_text((context / "Dockerfile").read_text())
    return context


@contextlib.contextmanager
def _storage(root: Path, registry: RegistryServer) -> Iterator[PodmanConfig]:
    config = make_podman_config(root, [registry.host])
    try:
        yield config
    finally:
        release_podman_storage(config)


def _detection_bytes(base: str, registry_host: str, workdir: Path) -> tuple[int, int, float]:
    """(bytes read by reading every layer to its end, bytes read by fnjob's scan, its
    seconds) for finding base's Python; both measured, nothing cached."""
    from fnjob.image.auth import Credentials
    from fnjob.image.registry import RegistryClient, parse_reference

    reference = parse_reference(base)
    manifest = json.loads(
        RegistryClient(
            reference.host, reference.repository, credentials=Credentials()
        ).get_manifest(reference.reference)[0]
    )
    with RegistryClient(reference.host, reference.repository, credentials=Credentials()) as full:
        for layer in manifest["layers"]:
            for _chunk in full.iter_blob(layer["digest"]):
                pass
        every_layer = full.bytes_downloaded
    read: list[int] = [0]

    def record(event: ProgressEvent) -> None:
        if event.stage == "check-python" and event.bytes_total:
            read[0] = max(read[0], event.bytes_done)

    started = time.perf_counter()
    _, python = AppendBuilder(
        base, cache_dir=workdir / f"detect-{time.monotonic_ns()}", progress=record
    ).resolve_base()
    seconds = time.perf_counter() - started
    assert python.version is not None, f"{base}: no Python found"
    return every_layer, read[0], seconds


def _stacked_base(registry: RegistryServer) -> str:
    """The Debian base with a small layer on top holding /usr/local/bin/python3."""
    import gzip
    import hashlib

    from fnjob.image.auth import Credentials
    from fnjob.image.layer import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256_digest
    from fnjob.image.registry import RegistryClient

    manifest = registry.manifest(BASE_REPOSITORY, "3.11").json()
    with RegistryClient(registry.host, BASE_REPOSITORY, credentials=Credentials()) as source:
        config = json.loads(source.get_blob(manifest["config"]["digest"]))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("usr/local/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, "python3.11"
        archive.addfile(link)
    top = gzip.compress(buffer.getvalue(), mtime=0)
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(buffer.getvalue()).hexdigest())
    config.pop("history", None)
    config_data = json.dumps(config).encode()
    stacked = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": sha256_digest(config_data),
            "size": len(config_data),
        },
        "layers": [
            *manifest["layers"],
            {"mediaType": OCI_LAYER, "digest": sha256_digest(top), "size": len(top)},
        ],
    }
    with RegistryClient(registry.host, "bench/stacked", credentials=Credentials()) as client:
        client.mount_blob(BASE_REPOSITORY, manifest["layers"][0]["digest"])
        client.push_blob(sha256_digest(top), lambda: iter([top]))
        client.push_blob(sha256_digest(config_data), lambda: iter([config_data]))
        client.put_manifest("v1", json.dumps(stacked).encode(), OCI_MANIFEST)
    return f"{registry.host}/bench/stacked:v1"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    with scratch_registry("fnjob-bench-") as scratch:
        workdir, registry, base = scratch.workdir, scratch.registry, scratch.base
        package = _small_package(workdir)
        base_manifest = registry.manifest(BASE_REPOSITORY, "3.11").json()
        base_bytes = sum(layer["size"] for layer in base_manifest["layers"])
        print(f"base image: {base} ({base_bytes / 2**20:.1f} MiB compressed)")
        detection = {}
        for label, image in (
            ("Debian base, Python in its one layer", base),
            ("small Python layer on top of it", _stacked_base(registry)),
        ):
            every, scanned, seconds = _detection_bytes(image, registry.host, workdir)
            detection[label] = (every, scanned)
            print(
                f"find the base's Python, {label}: every layer read {every / 1e6:6.1f} MB"
                f" (before) -> {scanned:,} bytes read now ({seconds:.2f} s)"
            )

        first_times, cached_times = [], []
        for run in range(options.repeats):
            fresh_cache = workdir / f"pycache-{run}"
            seconds, _, _, _ = _append(
                package, base, f"{registry.host}/bench/first{run}", fresh_cache
            )
            first_times.append(seconds)
            seconds, uploaded, _, digest = _append(
                package, base, f"{registry.host}/bench/append{run}", fresh_cache
            )
            cached_times.append(seconds)
        manifest_response = registry.manifest(f"bench/append{options.repeats - 1}", digest)
        manifest = manifest_response.json()
        new_bytes = (
            manifest["layers"][-1]["size"]
            + manifest["config"]["size"]
            + len(manifest_response.content)
        )
        again_seconds, again_bytes, again_uploads, _ = _append(
            package, base, f"{registry.host}/bench/append{options.repeats - 1}", fresh_cache
        )

        context = _context_dir(package, base, workdir)
        cold_times, warm_times = [], []
        for run in range(options.repeats):
            with _storage(workdir / f"buildah-{run}", registry) as storage:
                cold_times.append(
                    _buildah_build_push(storage, context, f"{registry.host}/bench/cold{run}:v1")
                )
                warm_times.append(
                    _buildah_build_push(storage, context, f"{registry.host}/bench/warm{run}:v1")
                )

    append_first, append_cached = _median(first_times), _median(cached_times)
    cold, warm = _median(cold_times), _median(warm_times)
    assert uploaded is not None and again_bytes is not None
    print(f"repeats: {options.repeats} (medians)")
    print(f"append+push, new repo, base Python not cached : {append_first:7.3f} s")
    print(f"append+push, new repo, base Python cached     : {append_cached:7.3f} s")
    print(f"buildah bud+push, cold (base not in storage)  : {cold:7.3f} s")
    print(f"buildah bud+push, warm (base already pulled)  : {warm:7.3f} s")
    print(
        f"speed-up vs cold buildah: {cold / append_cached:6.1f}x cached, "
        f"{cold / append_first:6.1f}x uncached (target >= 10x)"
    )
    print(
        f"speed-up vs warm buildah: {warm / append_cached:6.1f}x cached, "
        f"{warm / append_first:6.1f}x uncached"
    )
    print(
        f"bytes uploaded by append: {uploaded} ; code layer + config + manifest: {new_bytes} "
        f"; ratio {uploaded / new_bytes:.3f} (limit 1.10); base layers: {base_bytes}"
    )
    print(
        f"re-push of unchanged code: {again_uploads} blobs uploaded, {again_bytes} bytes "
        f"(the manifest only), {again_seconds:.3f} s"
    )
    print(
        json.dumps(
            {
                "append_uncached_s": round(append_first, 4),
                "append_cached_s": round(append_cached, 4),
                "buildah_cold_s": round(cold, 4),
                "buildah_warm_s": round(warm, 4),
                "bytes_uploaded": uploaded,
                "new_bytes": new_bytes,
                "repush_blobs": again_uploads,
                "repush_bytes": again_bytes,
                "python_detection_bytes": detection,
            }
        )
    )


if __name__ == "__main__":
    main()
