"""``from fnjob.fairing.kubernetes.utils import get_resource_mutator``, as with Fairing."""

from fnjob.fairing import get_resource_mutator

__all__ = ["get_resource_mutator"]
