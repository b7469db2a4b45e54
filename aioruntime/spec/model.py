"""The OCI runtime-spec config as immutable records (NamedTuple), with the spec's defaults.

NamedTuple, not dataclasses: the CLI imports this on every create, and dataclasses cost
ten times as much to import and define. For the same reason the annotations here are not
postponed (no ``from __future__ import annotations``): NamedTuple compiles each string
annotation into a ForwardRef, a third of this module's import time.

Only what the runtime acts on is modelled (cgroup resources in ``resources.py``); sections
owned by other layers (seccomp, ...) stay raw mappings, and ``Spec.raw`` keeps the whole
document so extensions and unknown keys round-trip untouched.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from .resources import Resources

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class User(NamedTuple):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


class ConsoleSize(NamedTuple):
    height: int
    width: int


class Capabilities(NamedTuple):
    """Each set is None when absent, which differs from an explicit empty list."""

    bounding: tuple[str, ...] | None = None
    effective: tuple[str, ...] | None = None
    inheritable: tuple[str, ...] | None = None
    permitted: tuple[str, ...] | None = None
    ambient: tuple[str, ...] | None = None


class Rlimit(NamedTuple):
    type: str
    hard: int
    soft: int


class IOPriority(NamedTuple):
    """``process.ioPriority``: ioprio_set(2) class (IOPRIO_CLASS_RT, _BE, _IDLE) and level 0-7."""

    class_: str
    priority: int


class Scheduler(NamedTuple):
    """``process.scheduler``: the sched_setattr(2) attributes, names as the spec spells them."""

    policy: str
    nice: int = 0
    priority: int = 0
    flags: tuple[str, ...] = ()
    runtime: int = 0
    deadline: int = 0
    period: int = 0


class Process(NamedTuple):
    args: tuple[str, ...]
    cwd: str
    env: tuple[str, ...] = ()
    user: User = User()
    terminal: bool = False
    console_size: ConsoleSize | None = None
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    selinux_label: str | None = None
    io_priority: IOPriority | None = None
    scheduler: Scheduler | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Process":
        """Validate an OCI process object, as ``runc exec -p process.json`` takes it."""
        import copy  # only here and in Spec: the CLI's exec and update never copy

        from .parse import parse_process

        return parse_process(copy.deepcopy(dict(d)) if isinstance(d, Mapping) else d)


class Root(NamedTuple):
    """``path`` may be relative, to the bundle directory."""

    path: str
    readonly: bool = False


class Mount(NamedTuple):
    destination: str
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] = ()


class Namespace(NamedTuple):
    """``path`` set means join that namespace; None means create a new one."""

    type: str
    path: str | None = None


class IDMapping(NamedTuple):
    container_id: int
    host_id: int
    size: int


class TimeOffset(NamedTuple):
    """One clock's offset in a new time namespace (``linux.timeOffsets``)."""

    secs: int
    nanosecs: int


class Device(NamedTuple):
    """``major``/``minor`` are 0 for fifos (type ``p``), which have none."""

    path: str
    type: str
    major: int
    minor: int
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class Hook(NamedTuple):
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


class Hooks(NamedTuple):
    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()


class Linux(NamedTuple):
    """``rootfs_propagation`` None means the runtime default (an empty string reads as None)."""

    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()
    devices: tuple[Device, ...] = ()
    cgroups_path: str | None = None
    resources: Resources | None = None
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    rootfs_propagation: str | None = None
    mount_label: str | None = None
    sysctl: Mapping[str, str] = _EMPTY
    seccomp: Mapping[str, Any] | None = None
    time_offsets: Mapping[str, TimeOffset] | None = None  # clock (monotonic, boottime) -> offset
    personality: Mapping[str, Any] | None = None
    intel_rdt: Mapping[str, Any] | None = None

    def namespace(self, type: str) -> Namespace | None:
        """The entry for ``type``; None means the container shares the runtime's."""
        return next((ns for ns in self.namespaces if ns.type == type), None)


class Spec(NamedTuple):
    """A validated config.json. Build it with ``Spec.from_dict`` or ``load``."""

    oci_version: str
    root: Root | None
    process: Process | None
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] = ()
    hooks: Hooks = Hooks()
    annotations: Mapping[str, str] = _EMPTY
    linux: Linux = Linux()
    raw: Mapping[str, Any] = _EMPTY

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Spec":
        """Validate a parsed config.json (copied, so later changes to ``d`` do not leak in)."""
        import copy

        from .check import fail
        from .parse import parse_spec  # parse builds these classes, so it imports this module

        if not isinstance(d, Mapping):
            fail("", "the config to be a JSON object", d)
        return parse_spec(copy.deepcopy(dict(d)))

    def to_dict(self) -> dict[str, Any]:
        """The document as given, extensions included; a copy, so the caller may edit it."""
        import copy

        return copy.deepcopy(dict(self.raw))
