"""``linux.resources``: the cgroup limits of a container, as records, from and to OCI JSON.

The same records are the argument of ``update``: a field left None is not changed.
As in runc, 0 means "not set" for the limits where 0 cannot be meant (memory sizes, CPU
shares, quota and periods, pids limit, block IO weights) and "" for ``cpus``/``mems``;
-1 means "unlimited" where the kernel has one.

Annotations are not postponed, as in ``model.py``: a string annotation costs NamedTuple a compile.
"""

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from aioruntime.errors import ConfigError

from .check import UINT32, UINT64, Check, Node, boolean, c_string, child, fail, integer, list_of, one_of

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class DeviceRule(NamedTuple):
    """One device cgroup rule; ``major``/``minor`` None match any number, type "a" any device."""

    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"


class Memory(NamedTuple):
    """Bytes; ``swap`` is memory+swap, as on cgroup v1 (converted for v2)."""

    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool | None = None
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


class CPU(NamedTuple):
    """CFS shares, quota, burst and period (µs), realtime budget (µs), cpuset lists, SCHED_IDLE."""

    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


class Pids(NamedTuple):
    """A negative limit means no limit."""

    limit: int | None = None


class WeightDevice(NamedTuple):
    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


class ThrottleDevice(NamedTuple):
    """``rate`` in bytes or operations per second; 0 removes the limit."""

    major: int
    minor: int
    rate: int


class BlockIO(NamedTuple):
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: tuple[WeightDevice, ...] = ()
    throttle_read_bps_device: tuple[ThrottleDevice, ...] = ()
    throttle_write_bps_device: tuple[ThrottleDevice, ...] = ()
    throttle_read_iops_device: tuple[ThrottleDevice, ...] = ()
    throttle_write_iops_device: tuple[ThrottleDevice, ...] = ()


class HugepageLimit(NamedTuple):
    """``page_size`` as the kernel names it in hugetlb files: "2MB", "1GB"."""

    page_size: str
    limit: int


class InterfacePriority(NamedTuple):
    name: str
    priority: int


class Network(NamedTuple):
    class_id: int | None = None
    priorities: tuple[InterfacePriority, ...] = ()


class Rdma(NamedTuple):
    hca_handles: int | None = None
    hca_objects: int | None = None


class Resources(NamedTuple):
    """``devices`` None keeps the rules as they are (on create: the runtime's defaults only)."""

    devices: tuple[DeviceRule, ...] | None = None
    memory: Memory | None = None
    cpu: CPU | None = None
    pids: Pids | None = None
    block_io: BlockIO | None = None
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    network: Network | None = None
    rdma: Mapping[str, Rdma] = _EMPTY
    unified: Mapping[str, str] = _EMPTY


# -- JSON names ----------------------------------------------------------------------------

_ODD_NAMES = {
    "kernel_tcp": "kernelTCP",
    "disable_oom_killer": "disableOOMKiller",
    "class_id": "classID",
    "block_io": "blockIO",
    "throttle_read_iops_device": "throttleReadIOPSDevice",
    "throttle_write_iops_device": "throttleWriteIOPSDevice",
}


def json_name(field: str) -> str:
    """The OCI key of a record field: ``realtime_runtime`` -> ``realtimeRuntime``."""
    if field in _ODD_NAMES:
        return _ODD_NAMES[field]
    head, *rest = field.split("_")
    return head + "".join(w.capitalize() for w in rest)


def to_dict(value: Any) -> Any:
    """A record as OCI JSON, unset (None) fields and empty lists left out."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        out = {}
        for name, v in zip(value._fields, value):
            if v is None or (isinstance(v, (tuple, Mapping)) and not v and name != "devices"):
                continue  # an empty device list says "no rules", unlike None
            out[json_name(name)] = to_dict(v)
        return out
    if isinstance(value, tuple):
        return [to_dict(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_dict(v) for k, v in value.items()}
    return value


# -- parsing -------------------------------------------------------------------------------

R = TypeVar("R")
INT64 = integer(-(2**63), 2**63 - 1, "an integer from -2^63 to 2^63-1")


def _unset_zero(check: Check[int]) -> Check[int | None]:
    """0 reads as "not set", as runc reads it."""

    def parse(value: Any, path: str) -> int | None:
        n = check(value, path)
        return None if n == 0 else n

    return parse


def _limit(value: Any, path: str) -> int | None:
    """Bytes: -1 for unlimited, 0 for not set."""
    n = INT64(value, path)
    if n < -1:
        fail(path, "a number of bytes, or -1 for unlimited", value)
    return None if n == 0 else n


def _record(cls: type[R], checks: Mapping[str, Check[Any]], required: tuple[str, ...] = ()) -> Check[R]:
    """A check for the JSON object of ``cls``: each field read with its check under its OCI name."""

    def parse(value: Any, path: str) -> R:
        n = Node(value, path)
        fields = {}
        for name, check in checks.items():
            if name in required:
                fields[name] = n.get(json_name(name), check)
            else:
                fields[name] = n.get(json_name(name), check, None)
        return cls(**{k: v for k, v in fields.items() if v is not None})

    return parse


def _access(value: Any, path: str) -> str:
    text = c_string(value, path)
    if not text or set(text) - set("rwm") or len(set(text)) != len(text):
        fail(path, 'access letters from "rwm", each at most once', value)
    return text


def _device_number(value: Any, path: str) -> int | None:
    """-1 (or absent) matches every number, as runc reads it."""
    n = INT64(value, path)
    if n < -1 or n > 2**32 - 1:
        fail(path, "a device number from 0 to 2^32-1, or -1 for any", value)
    return None if n == -1 else n


def _device_rule(value: Any, path: str) -> DeviceRule:
    n = Node(value, path)
    rule = DeviceRule(
        allow=n.get("allow", boolean),
        type=n.get("type", one_of(("a", "b", "c", ""), 'one of "a" (all), "b", "c"'), "a") or "a",
        major=n.get("major", _device_number, None),
        minor=n.get("minor", _device_number, None),
        access=n.get("access", _access, "rwm"),
    )
    if rule.type == "a" and (rule.major is not None or rule.minor is not None or rule.access != "rwm"):
        raise ConfigError(
            path, 'a rule of type "a" covers every device and access: leave out major and minor, '
            'use access "rwm", or give type "c" or "b"'
        )
    return rule


def _cpu_list(value: Any, path: str) -> str | None:
    """A cpuset list such as "0-3,6"; "" is not set."""
    text = c_string(value, path)
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and (not high.isdigit() or int(high) < int(low))):
            fail(path, 'a list of numbers and ranges such as "0-3,6"', value)
    return text or None


def _shares(value: Any, path: str) -> int | None:
    n = UINT64(value, path)
    if n and not 2 <= n <= 262144:
        fail(path, "CPU shares from 2 to 262144", value)
    return n or None


def _period(value: Any, path: str) -> int | None:
    n = UINT64(value, path)
    if n and not 1000 <= n <= 1_000_000:
        fail(path, "a period from 1000 to 1000000 µs", value)
    return n or None


def _quota(value: Any, path: str) -> int | None:
    n = INT64(value, path)
    if n < -1 or 0 < n < 1000:
        fail(path, "a quota of at least 1000 µs, or -1 for none", value)
    return n or None


def _rt_runtime(value: Any, path: str) -> int | None:
    n = INT64(value, path)
    if n < -1:
        fail(path, "a runtime in µs, or -1 for no limit", value)
    return n or None


def _pids_limit(value: Any, path: str) -> int | None:
    n = INT64(value, path)
    return None if n == 0 else max(n, -1)


def _blkio_weight(value: Any, path: str) -> int | None:
    n = UINT64(value, path)
    if n and not 10 <= n <= 1000:
        fail(path, "a weight from 10 to 1000", value)
    return n or None


_throttle = _record(ThrottleDevice, {"major": INT64, "minor": INT64, "rate": UINT64}, ("major", "minor", "rate"))
_throttles = list_of(_throttle, "device throttle objects")


def _weight_device(value: Any, path: str) -> WeightDevice:
    wd = _record(
        WeightDevice,
        {"major": INT64, "minor": INT64, "weight": _blkio_weight, "leaf_weight": _blkio_weight},
        ("major", "minor"),
    )(value, path)
    if wd.weight is None and wd.leaf_weight is None:
        raise ConfigError(path, "a weight device needs weight or leafWeight")
    return wd


def _page_size(value: Any, path: str) -> str:
    text = c_string(value, path)
    if not text[:-2].isdigit() or text[-2:] not in ("KB", "MB", "GB"):
        fail(path, 'a huge page size such as "2MB" or "1GB"', value)
    return text


def _unified(value: Any, path: str) -> Mapping[str, str]:
    n = Node(value, path)
    for key, v in n.data.items():
        where = child(path, key)
        if not key or "/" in key or key.startswith(".") or "." not in key:
            raise ConfigError(where, "expected the name of a cgroup v2 interface file such as memory.high")
        c_string(v, where)
    return MappingProxyType(dict(n.data))


def _rdma(value: Any, path: str) -> Mapping[str, Rdma]:
    n = Node(value, path)
    device = _record(Rdma, {"hca_handles": UINT32, "hca_objects": UINT32})
    return MappingProxyType({k: device(v, child(path, k)) for k, v in n.data.items()})


_memory = _record(
    Memory,
    {
        "limit": _limit,
        "reservation": _limit,
        "swap": _limit,
        "kernel": _limit,
        "kernel_tcp": _limit,
        "swappiness": integer(0, 100, "a swappiness from 0 to 100"),
        "disable_oom_killer": boolean,
        "use_hierarchy": boolean,
        "check_before_update": boolean,
    },
)
_cpu = _record(
    CPU,
    {
        "shares": _shares,
        "quota": _quota,
        "burst": UINT64,
        "period": _period,
        "realtime_runtime": _rt_runtime,
        "realtime_period": _unset_zero(UINT64),
        "cpus": _cpu_list,
        "mems": _cpu_list,
        "idle": integer(0, 1, "0 or 1 (SCHED_IDLE)"),
    },
)
_block_io = _record(
    BlockIO,
    {
        "weight": _blkio_weight,
        "leaf_weight": _blkio_weight,
        "weight_device": list_of(_weight_device, "weight device objects"),
        "throttle_read_bps_device": _throttles,
        "throttle_write_bps_device": _throttles,
        "throttle_read_iops_device": _throttles,
        "throttle_write_iops_device": _throttles,
    },
)
_network = _record(
    Network,
    {
        "class_id": UINT32,
        "priorities": list_of(
            _record(InterfacePriority, {"name": c_string, "priority": UINT32}, ("name", "priority")),
            "interface priority objects",
        ),
    },
)
_resources = _record(
    Resources,
    {
        "devices": list_of(_device_rule, "device rule objects"),
        "memory": _memory,
        "cpu": _cpu,
        "pids": _record(Pids, {"limit": _pids_limit}),
        "block_io": _block_io,
        "hugepage_limits": list_of(
            _record(HugepageLimit, {"page_size": _page_size, "limit": UINT64}, ("page_size", "limit")),
            "hugepage limit objects",
        ),
        "network": _network,
        "rdma": _rdma,
        "unified": _unified,
    },
)


def check_consistent(r: Resources, path: str) -> None:
    """The rules that span fields, checked on the resources as they will stand."""
    m = r.memory
    if m is not None and m.swap is not None and m.swap != -1:
        if m.limit is None or m.limit == -1:
            raise ConfigError(child(child(path, "memory"), "swap"), "a memory+swap limit needs a memory limit")
        if m.swap < m.limit:
            raise ConfigError(
                child(child(path, "memory"), "swap"),
                f"memory+swap limit {m.swap} is below the memory limit {m.limit}: raise it too, or use -1",
            )
    c = r.cpu
    if c is not None and c.burst and (c.quota is None or c.quota == -1 or c.burst > c.quota):
        raise ConfigError(child(child(path, "cpu"), "burst"), f"burst {c.burst} needs a quota at least as large")


def parse_resources(value: Any, path: str = "linux.resources") -> Resources:
    """Validate the fields of ``linux.resources`` or of an update (a ``runc update``
    document), naming the JSON path of a bad one. Rules across fields are
    ``check_consistent``'s: an update is checked merged with what it changes."""
    return _resources(value, path)


def config_resources(value: Any, path: str) -> Resources:
    """``linux.resources`` of a config: each field valid, and all of them together."""
    r = _resources(value, path)
    check_consistent(r, path)
    return r


def validated(r: Resources, path: str = "linux.resources") -> Resources:
    """Check records built in Python as their JSON would be checked (types and ranges)."""
    if not isinstance(r, Resources):
        fail(path, "a Resources record", repr(r))
    return parse_resources(to_dict(r), path)


# -- update: the new resources over the current ones ------------------------------------------


def _fields(current: Any, change: Any, merge_lists: Mapping[str, Callable[[Any, Any], Any]] = _EMPTY) -> Any:
    """``change`` over ``current`` field by field: a None (or empty list) field keeps the current value."""
    if change is None or current is None:
        return change if current is None else current
    values = {}
    for name, old, new in zip(current._fields, current, change):
        if name in merge_lists:
            values[name] = merge_lists[name](old, new)
        else:
            values[name] = old if new is None or (isinstance(new, tuple) and not new) else new
    return type(current)(**values)


def _upsert(key: Callable[[Any], Any]) -> Callable[[tuple[Any, ...], tuple[Any, ...]], tuple[Any, ...]]:
    """Merge two lists of records: a record of ``new`` replaces the one of ``old`` with the same key."""

    def merge(old: tuple[Any, ...], new: tuple[Any, ...]) -> tuple[Any, ...]:
        replaced = {key(x) for x in new}
        return tuple(x for x in old if key(x) not in replaced) + tuple(new)

    return merge


_by_device = _upsert(lambda d: (d.major, d.minor))


def merge(current: Resources, change: Resources) -> Resources:
    """The resources after ``change`` is applied to ``current`` (runc's update semantics)."""
    block_io = _fields(
        current.block_io,
        change.block_io,
        {name: _by_device for name in BlockIO._fields if name.endswith("_device")},
    )
    network = _fields(current.network, change.network, {"priorities": _upsert(lambda p: p.name)})
    return Resources(
        devices=current.devices if change.devices is None else change.devices,
        memory=_fields(current.memory, change.memory),
        cpu=_fields(current.cpu, change.cpu),
        pids=_fields(current.pids, change.pids),
        block_io=block_io,
        hugepage_limits=_upsert(lambda h: h.page_size)(current.hugepage_limits, change.hugepage_limits),
        network=network,
        rdma=MappingProxyType({**current.rdma, **change.rdma}),
        unified=MappingProxyType({**current.unified, **change.unified}),
    )
