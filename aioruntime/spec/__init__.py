"""The OCI runtime-spec config: model, loading with validation, and runc's default configs."""

from .default import default_spec, rootless_spec
from .load import load, load_process, loads
from .model import (
    Capabilities,
    ConsoleSize,
    Device,
    Hook,
    Hooks,
    IDMapping,
    IOPriority,
    Linux,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Root,
    Scheduler,
    Spec,
    TimeOffset,
    User,
)

__all__ = [
    "Capabilities",
    "ConsoleSize",
    "Device",
    "Hook",
    "Hooks",
    "IDMapping",
    "IOPriority",
    "Linux",
    "Mount",
    "Namespace",
    "Process",
    "Rlimit",
    "Root",
    "Scheduler",
    "Spec",
    "TimeOffset",
    "User",
    "default_spec",
    "load",
    "load_process",
    "loads",
    "rootless_spec",
]
