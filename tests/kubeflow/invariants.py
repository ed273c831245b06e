"""The apply-order invariants, written once and checked on every render the tests make."""

from __future__ import annotations

from collections.abc import Sequence

from components.kubeflow.objects import ref
from components.kubeflow.phases import (
    Phase,
    RenderIndex,
    pod_mutators,
    webhook_servers,
    workload_needs,
)

PHASE_NAMES = [
    "01-namespaces-crds",
    "02-platform",
    "03-platform-webhooks",
    "04-applications",
    "05-application-webhooks",
]


def closure_violations(phases: Sequence[Phase]) -> list[str]:
    """Every way `phases` breaks the apply-order rules (empty when it keeps them all):
    - a workload's needs (ServiceAccount, its bindings and roles, ConfigMaps, Secrets, PVCs,
      PriorityClass, fronting Services) are applied in its phase or earlier;
    - a webhook configuration comes after the workloads serving it;
    - a workload whose pods a rendered webhook mutates comes after that webhook.
    """
    objects = [o for phase in phases for o in phase.objects]
    number = [n for n, phase in enumerate(phases) for _ in phase.objects]
    index = RenderIndex(objects)
    found = []
    for w in index.workloads:
        for need in workload_needs(index, w):
            if number[need] > number[w]:
                found.append(
                    f"{ref(objects[w])} ({phases[number[w]].name}) needs {ref(objects[need])} "
                    f"({phases[number[need]].name})"
                )
        for hook in pod_mutators(index, w):
            if number[hook] >= number[w]:
                found.append(f"{ref(objects[w])} is not after its mutator {ref(objects[hook])}")
    for config in index.webhook_configs:
        for server in webhook_servers(index, config) or []:
            if number[config] <= number[server]:
                found.append(
                    f"{ref(objects[config])} is not after its server {ref(objects[server])}"
                )
    return found
