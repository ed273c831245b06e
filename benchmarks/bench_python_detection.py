"""Bytes of a layered base read to find its Python, with and without a declared Python.

Prints figures, asserts nothing. Starts its own ``docker-registry`` on 127.0.0.1 and builds,
from the cached Debian Python base of the test fixtures, a base shaped like a CUDA image:
Python in its lowest layer, then ``--layers`` layers of libraries (random bytes) on top.
Three configs over the same layers: nothing declared, ``ENV PYTHON_VERSION=3.11``, and the
label ``io.kubeflow-eks.python-version=3.11``. For each, the first build's Python lookup
(nothing cached) and the bytes of base layers it downloaded.

    .venv/bin/python benchmarks/bench_python_detection.py [--layers 7] [--layer-mb 24]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from typing import Any

from benchlib import BASE_REPOSITORY, scratch_registry

from fnjob.image.auth import Credentials
from fnjob.image.builders import AppendBuilder
from fnjob.image.layer import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256_digest
from fnjob.image.pythonversion import PYTHON_LABEL
from fnjob.image.registry import RegistryClient
from tests.fnjob.conftest import RegistryServer

MiB = 1 << 20


def _library_layer(index: int, size: int) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = os.urandom(size)
        info = tarfile.TarInfo(f"usr/local/cuda/lib64/libfake{index}.so")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    tar = buffer.getvalue()
    return gzip.compress(tar, compresslevel=1, mtime=0), "sha256:" + hashlib.sha256(tar).hexdigest()


def push_layered_bases(
    registry: RegistryServer, layers: int, layer_size: int
) -> tuple[dict[str, str], int]:
    """{variant: reference} of three bases sharing the same layers, and their total size."""
    base_manifest = registry.manifest(BASE_REPOSITORY, "3.11").json()
    with RegistryClient(registry.host, BASE_REPOSITORY, credentials=Credentials()) as source:
        base_config = json.loads(source.get_blob(base_manifest["config"]["digest"]))
    descriptors: list[dict[str, Any]] = [base_manifest["layers"][0]]
    diff_ids = list(base_config["rootfs"]["diff_ids"])
    repository = "bench/cuda-like"
    references = {}
    with RegistryClient(registry.host, repository, credentials=Credentials()) as client:
        client.mount_blob(BASE_REPOSITORY, descriptors[0]["digest"])
        for index in range(layers):
            blob, diff_id = _library_layer(index, layer_size)
            client.push_blob(sha256_digest(blob), lambda blob=blob: iter([blob]))
            descriptors.append(
                {"mediaType": OCI_LAYER, "digest": sha256_digest(blob), "size": len(blob)}
            )
            diff_ids.append(diff_id)
        variants: dict[str, tuple[list[str], dict[str, str]]] = {
            "nothing declared": ([], {}),
            "ENV PYTHON_VERSION": (["PYTHON_VERSION=3.11.2"], {}),
            f"label {PYTHON_LABEL}": ([], {PYTHON_LABEL: "3.11"}),
        }
        for tag, (name, (env, labels)) in enumerate(variants.items()):
            config = json.loads(json.dumps(base_config))
            config["config"]["Env"] = [*config["config"].get("Env", []), *env]
            config["config"]["Labels"] = labels
            config["rootfs"]["diff_ids"] = diff_ids
            config.pop("history", None)
            data = json.dumps(config).encode()
            client.push_blob(sha256_digest(data), lambda data=data: iter([data]))
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": sha256_digest(data),
                    "size": len(data),
                },
                "layers": descriptors,
            }
            client.put_manifest(f"v{tag}", json.dumps(manifest).encode(), OCI_MANIFEST)
            references[name] = f"{registry.host}/{repository}:v{tag}"
    return references, sum(int(d["size"]) for d in descriptors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--layer-mb", type=int, default=24)
    options = parser.parse_args()
    with scratch_registry("fnjob-bench-python-") as scratch:
        work, registry = scratch.workdir, scratch.registry
        references, total = push_layered_bases(registry, options.layers, options.layer_mb * MiB)
        print(
            f"base: {options.layers + 1} layers, {total / 1e6:.1f} MB compressed, "
            "Python in the lowest layer"
        )
        figures = {}
        for name, reference in references.items():
            started = time.perf_counter()
            _, python = AppendBuilder(
                reference, cache_dir=work / f"cache-{len(figures)}"
            ).resolve_base()
            seconds = time.perf_counter() - started
            figures[name] = python.bytes_read
            print(
                f"{name:45}: Python {python.version} from {python.found_in}, "
                f"{python.bytes_read / 1e6:8.1f} MB of layers read, {seconds:6.2f} s"
            )
        print(json.dumps({"base_bytes": total, "bytes_read": figures}))


if __name__ == "__main__":
    main()
