"""Kubernetes and DNS naming rules, checked the same way by the config and by component args."""

from __future__ import annotations

import re

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# [DNS subdomain prefix/]name, as label and taint keys are written.
_QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def is_dns_label(value: str, max_length: int = 63) -> bool:
    """Lowercase letters, digits and '-', alphanumeric at both ends (namespaces, names)."""
    return len(value) <= max_length and _DNS_LABEL.match(value) is not None


def is_email(value: str) -> bool:
    return _EMAIL.match(value) is not None


def is_label_key(key: str) -> bool:
    """A label or taint key: optional DNS prefix and '/', then a name of at most 63 characters."""
    name = key.rsplit("/", 1)[-1]
    return _QUALIFIED_NAME.match(key) is not None and len(name) <= 63 and len(key) <= 253


def is_label_value(value: str) -> bool:
    """Empty, or at most 63 characters of [A-Za-z0-9-_.], alphanumeric at both ends."""
    return len(value) <= 63 and _LABEL_VALUE.match(value) is not None


def node_group_name(group: str, zone_suffix: str | None = None) -> str:
    """A node group's name in its cluster: its group's, then its zone's when the group is
    zonal (``gpu-a``). Pulumi resource names and EKS name prefixes derive from it, so two
    node groups of one stack must not share it."""
    return f"{group}-{zone_suffix}" if zone_suffix else group
