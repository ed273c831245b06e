"""``python3 -m stack.versions kubectl-image [MINOR]``: the build argument ``KUBECTL_IMAGE``
of ``images/notebook`` from the version table (``model/versions.yaml``), for building it by
hand."""

from __future__ import annotations

import sys

from model.versions import DEFAULT_KUBERNETES_VERSION, SUPPORTED_KUBERNETES_VERSIONS, kubectl_image


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or argv[0] != "kubectl-image":
        print("usage: python3 -m stack.versions kubectl-image [KUBERNETES_MINOR]", file=sys.stderr)
        return 2
    version = argv[1] if len(argv) == 2 else DEFAULT_KUBERNETES_VERSION
    if version not in SUPPORTED_KUBERNETES_VERSIONS:
        pinned = ", ".join(SUPPORTED_KUBERNETES_VERSIONS)
        print(f"Kubernetes {version!r} is not pinned; pinned: {pinned}", file=sys.stderr)
        return 2
    print(kubectl_image(version))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
