"""config.json -> model: type checks per field, then the rules that span fields.

Each ``_section(value, path)`` is itself a check (see check.py), so sections nest and
every error names the JSON path of the bad value.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from aioruntime.errors import ConfigError

from .check import (
    UINT32,
    UINT64,
    Node,
    abs_path,
    boolean,
    c_string,
    fail,
    integer,
    list_of,
    one_of,
    raw_object,
    string,
    string_map,
)
from .model import (
    Capabilities,
    ConsoleSize,
    Device,
    Hook,
    Hooks,
    IDMapping,
    Linux,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Root,
    Spec,
    TimeOffset,
    User,
)
from .names import CAPABILITIES, DEVICE_TYPES, NAMESPACE_TYPES, RLIMITS, ROOTFS_PROPAGATIONS
from .resources import config_resources
from .scheduling import io_priority, scheduler

_c_strings = list_of(c_string, "strings")
_paths = list_of(abs_path, "absolute paths")
_capabilities = list_of(
    one_of(CAPABILITIES, "a Linux capability name (CAP_CHOWN ... CAP_CHECKPOINT_RESTORE)"),
    "capability names",
)
_rlimit_type = one_of(RLIMITS, f"one of {', '.join(RLIMITS)}")
_namespace_type = one_of(NAMESPACE_TYPES, f"one of {', '.join(NAMESPACE_TYPES)}")
_device_type = one_of(DEVICE_TYPES, "one of c, b, u, p")
_propagation = one_of(ROOTFS_PROPAGATIONS, f"one of {', '.join(map(repr, ROOTFS_PROPAGATIONS))}")
_console_side = integer(0, 65535)  # the kernel's struct winsize holds unsigned shorts
_oom_score_adj = integer(-1000, 1000)
_timeout = integer(1, 2**63 - 1, "a positive integer (seconds)")
_mapping_size = integer(1, 2**32 - 1)
_device_number = integer(0, 2**63 - 1, "a non-negative integer")


def _env(value: Any, path: str) -> str:
    text = c_string(value, path)
    if "=" not in text:
        fail(path, "NAME=value", text)
    return text


def _nonempty(value: Any, path: str) -> str:
    text = c_string(value, path)
    if not text:
        fail(path, "a non-empty string", text)
    return text


def _root(value: Any, path: str) -> Root:
    n = Node(value, path)
    return Root(path=n.get("path", _nonempty), readonly=n.get("readonly", boolean, False))


def _user(value: Any, path: str) -> User:
    n = Node(value, path)
    return User(
        uid=n.get("uid", UINT32, 0),
        gid=n.get("gid", UINT32, 0),
        umask=n.get("umask", UINT32, None),
        additional_gids=n.get("additionalGids", list_of(UINT32, "group ids"), ()),
    )


def _console_size(value: Any, path: str) -> ConsoleSize:
    n = Node(value, path)
    return ConsoleSize(height=n.get("height", _console_side), width=n.get("width", _console_side))


def _caps(value: Any, path: str) -> Capabilities:
    n = Node(value, path)
    return Capabilities(
        bounding=n.get("bounding", _capabilities, None),
        effective=n.get("effective", _capabilities, None),
        inheritable=n.get("inheritable", _capabilities, None),
        permitted=n.get("permitted", _capabilities, None),
        ambient=n.get("ambient", _capabilities, None),
    )


def _rlimit(value: Any, path: str) -> Rlimit:
    n = Node(value, path)
    limit = Rlimit(type=n.get("type", _rlimit_type), hard=n.get("hard", UINT64), soft=n.get("soft", UINT64))
    if limit.soft > limit.hard:
        raise ConfigError(n.at("soft"), f"soft limit {limit.soft} is above the hard limit {limit.hard}")
    return limit


def _no_duplicates(types: list[str], path: str, what: str) -> None:
    """Reject a ``type`` seen twice in the list at ``path``, naming both places."""
    first: dict[str, int] = {}
    for i, t in enumerate(types):
        if t in first:
            raise ConfigError(f"{path}[{i}].type", f"duplicate {what} {t!r}, also at {path}[{first[t]}]")
        first[t] = i


def _process(value: Any, path: str) -> Process:
    n = Node(value, path)
    args = n.get("args", _c_strings)
    if not args:
        fail(n.at("args"), "a non-empty list of strings", [])
    rlimits = n.get("rlimits", list_of(_rlimit, "rlimit objects"), ())
    _no_duplicates([r.type for r in rlimits], n.at("rlimits"), "rlimit")
    return Process(
        args=args,
        cwd=n.get("cwd", abs_path),
        env=n.get("env", list_of(_env, "NAME=value strings"), ()),
        user=n.get("user", _user, User()),
        terminal=n.get("terminal", boolean, False),
        console_size=n.get("consoleSize", _console_size, None),
        capabilities=n.get("capabilities", _caps, None),
        rlimits=rlimits,
        no_new_privileges=n.get("noNewPrivileges", boolean, False),
        apparmor_profile=n.get("apparmorProfile", string, None),
        oom_score_adj=n.get("oomScoreAdj", _oom_score_adj, None),
        selinux_label=n.get("selinuxLabel", string, None),
        io_priority=n.get("ioPriority", io_priority, None),
        scheduler=n.get("scheduler", scheduler, None),
    )


def _mount(value: Any, path: str) -> Mount:
    n = Node(value, path)
    return Mount(
        destination=n.get("destination", abs_path),
        type=n.get("type", c_string, None),
        source=n.get("source", c_string, None),
        options=n.get("options", _c_strings, ()),
    )


def _hook(value: Any, path: str) -> Hook:
    n = Node(value, path)
    return Hook(
        path=n.get("path", abs_path),
        args=n.get("args", _c_strings, ()),
        env=n.get("env", _c_strings, ()),
        timeout=n.get("timeout", _timeout, None),
    )


def _hooks(value: Any, path: str) -> Hooks:
    n = Node(value, path)
    hooks = list_of(_hook, "hook objects")
    return Hooks(
        prestart=n.get("prestart", hooks, ()),
        create_runtime=n.get("createRuntime", hooks, ()),
        create_container=n.get("createContainer", hooks, ()),
        start_container=n.get("startContainer", hooks, ()),
        poststart=n.get("poststart", hooks, ()),
        poststop=n.get("poststop", hooks, ()),
    )


def _namespace(value: Any, path: str) -> Namespace:
    n = Node(value, path)
    type_ = n.get("type", _namespace_type)
    # Go omits "path" for a new namespace; hand-written configs often say "" instead.
    ns_path = n.get("path", string, None)
    return Namespace(type=type_, path=abs_path(ns_path, n.at("path")) if ns_path else None)


def _id_mapping(value: Any, path: str) -> IDMapping:
    n = Node(value, path)
    return IDMapping(
        container_id=n.get("containerID", UINT32),
        host_id=n.get("hostID", UINT32),
        size=n.get("size", _mapping_size),
    )


def _device(value: Any, path: str) -> Device:
    n = Node(value, path)
    type_ = n.get("type", _device_type)
    fifo = type_ == "p"  # a fifo has no device number
    return Device(
        path=n.get("path", abs_path),
        type=type_,
        major=n.get("major", _device_number, 0) if fifo else n.get("major", _device_number),
        minor=n.get("minor", _device_number, 0) if fifo else n.get("minor", _device_number),
        file_mode=n.get("fileMode", UINT32, None),
        uid=n.get("uid", UINT32, None),
        gid=n.get("gid", UINT32, None),
    )


_CLOCKS = ("monotonic", "boottime")  # the clocks a time namespace offsets


def _time_offsets(value: Any, path: str) -> MappingProxyType[str, TimeOffset]:
    n = Node(value, path)
    offsets = {}
    for clock in n.data:
        where = n.at(clock)
        if clock not in _CLOCKS:
            raise ConfigError(where, f"expected one of the clocks {', '.join(_CLOCKS)}")
        o = Node(n.data[clock], where)
        offsets[clock] = TimeOffset(
            secs=o.get("secs", integer(-(2**63), 2**63 - 1), 0),
            nanosecs=o.get("nanosecs", integer(0, 999_999_999), 0),
        )
    return MappingProxyType(offsets)


def _linux(value: Any, path: str) -> Linux:
    n = Node(value, path)
    namespaces = n.get("namespaces", list_of(_namespace, "namespace objects"), ())
    _no_duplicates([ns.type for ns in namespaces], n.at("namespaces"), "namespace type")
    mappings = list_of(_id_mapping, "id mapping objects")
    linux = Linux(
        namespaces=namespaces,
        uid_mappings=n.get("uidMappings", mappings, ()),
        gid_mappings=n.get("gidMappings", mappings, ()),
        devices=n.get("devices", list_of(_device, "device objects"), ()),
        cgroups_path=n.get("cgroupsPath", string, None),
        resources=n.get("resources", config_resources, None),
        masked_paths=n.get("maskedPaths", _paths, ()),
        readonly_paths=n.get("readonlyPaths", _paths, ()),
        rootfs_propagation=n.get("rootfsPropagation", _propagation, None) or None,
        mount_label=n.get("mountLabel", string, None),
        sysctl=n.get("sysctl", string_map, MappingProxyType({})),
        seccomp=n.get("seccomp", raw_object, None),
        time_offsets=n.get("timeOffsets", _time_offsets, None),
        personality=n.get("personality", raw_object, None),
        intel_rdt=n.get("intelRdt", raw_object, None),
    )
    time = linux.namespace("time")
    if linux.time_offsets is not None and (time is None or time.path):
        raise ConfigError(n.at("timeOffsets"), 'time offsets need a new time namespace: add {"type": "time"} without a path')
    if linux.namespace("user") is None:
        for key, found in (("uidMappings", linux.uid_mappings), ("gidMappings", linux.gid_mappings)):
            if found:
                raise ConfigError(
                    n.at(key), f'{key} require a user namespace: add {{"type": "user"}} to linux.namespaces'
                )
    return linux


def parse_process(d: Any) -> Process:
    """Validate an OCI process object on its own (``runc exec -p``); errors name ``process.*``."""
    return _process(d, "process")


def parse_linux(d: Any) -> Linux:
    """Validate a config's ``linux`` object on its own (exec needs no more of a saved config)."""
    return _linux(d, "linux")


def parse_spec(d: dict[str, Any]) -> Spec:
    """Validate ``d`` and model it; ``d`` becomes ``Spec.raw``, so the caller must not keep it."""
    n = Node(d, "")
    spec = Spec(
        oci_version=n.get("ociVersion", string),
        root=n.get("root", _root, None),
        process=n.get("process", _process, None),
        hostname=n.get("hostname", c_string, None),
        domainname=n.get("domainname", c_string, None),
        mounts=n.get("mounts", list_of(_mount, "mount objects"), ()),
        hooks=n.get("hooks", _hooks, Hooks()),
        annotations=n.get("annotations", string_map, MappingProxyType({})),
        linux=n.get("linux", _linux, Linux()),
        raw=MappingProxyType(d),
    )
    # As runc: without a uts namespace of its own the container would rename the host.
    for key, name in (("hostname", spec.hostname), ("domainname", spec.domainname)):
        if name and spec.linux.namespace("uts") is None:
            raise ConfigError(key, f'{key} requires a new uts namespace: add {{"type": "uts"}} to linux.namespaces')
    return spec
