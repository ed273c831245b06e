"""Suite-wide setup: nothing a test renders or caches lands in the user's home."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_kubeflow_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBEFLOW_EKS_CACHE", str(tmp_path_factory.mktemp("kubeflow-eks-cache")))
        yield
