"""The stack's one typed model: every key, default and rule, written once.

The bottom floor of the program (tests/test_layering.py keeps it so): the stack types, the
GPU instance catalog (``catalog``), the version table (``versions``) and the naming rules
(``naming``). It imports nothing of ours; components take its types as their input, and
``stack`` reads stack files into it and wires the components.

A stack is ``EksStack`` (the stack creates the cluster on AWS) or ``OnpremStack`` (an existing
cluster), told apart by ``mode``. Models are frozen and refuse unknown keys. Rules that span
several fields are collected by ``Rules`` so every broken rule of an object is reported at
once, each under its own key; ``stack.problems`` turns them into messages that name the key
and what to write instead, and never show a secret. Components receive these validated
values and do not check them again.
"""

from model.aws import ClusterAutoscaler, Endpoint, NodeGroupShape, SystemNodeGroup, Vpc
from model.gpu import (
    ACCELERATOR_LABEL,
    DEFAULT_GPU_TAINT,
    GPU_GROUP_LABEL,
    GPU_PRESENT_LABEL,
    GPU_RESOURCE,
    DevicePlugin,
    EksGpuGroup,
    GpuGroup,
    OnpremGpuGroup,
    Taint,
)
from model.kubeflow import Kubeflow, Profile
from model.monitoring import Monitoring
from model.stacks import (
    PROJECT,
    SECRET_PRESENT,
    EksStack,
    Onprem,
    OnpremStack,
    StackBase,
    StackConfig,
)

Stack = EksStack | OnpremStack

__all__ = [
    "ACCELERATOR_LABEL",
    "DEFAULT_GPU_TAINT",
    "GPU_GROUP_LABEL",
    "GPU_PRESENT_LABEL",
    "GPU_RESOURCE",
    "PROJECT",
    "SECRET_PRESENT",
    "ClusterAutoscaler",
    "DevicePlugin",
    "EksGpuGroup",
    "EksStack",
    "Endpoint",
    "GpuGroup",
    "Kubeflow",
    "Monitoring",
    "NodeGroupShape",
    "Onprem",
    "OnpremGpuGroup",
    "OnpremStack",
    "Profile",
    "Stack",
    "StackBase",
    "StackConfig",
    "SystemNodeGroup",
    "Taint",
    "Vpc",
]
