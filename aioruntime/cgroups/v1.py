"""cgroup v1: the files each resource is written to, in the order the kernel accepts them.

Each function plans the writes for one section of ``linux.resources`` into the
controller's directory ``d``, checking that every file exists first, so a resource this
kernel lacks is an error naming the field rather than a silent omission.
"""

from __future__ import annotations

import os

from ..spec.check import child
from ..spec.resources import CPU, BlockIO, HugepageLimit, Memory, Network, ThrottleDevice, json_name
from .files import Write, need, read

def memory(m: Memory, d: str, field: str) -> list[Write]:
    def at(name: str) -> str:
        return child(field, name)

    out: list[Write] = []
    limit, swap = m.limit, m.swap
    if limit == -1 and swap is None and os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
        swap = -1  # as runc: unlimited memory means unlimited swap too
    writes = []
    if limit is not None:
        writes.append(Write(at("limit"), need(d, "memory.limit_in_bytes", at("limit")), str(limit)))
    if swap is not None:
        path = need(d, "memory.memsw.limit_in_bytes", at("swap"),
                    "this kernel does not account swap (no memory.memsw.limit_in_bytes: boot with swapaccount=1)")
        writes.append(Write(at("swap"), path, str(swap)))
        # memory <= memory+swap must hold after each write: raise memsw first when it grows
        if limit is not None and (swap == -1 or int(read(writes[0].path)) < swap):
            writes.reverse()
    out += writes
    out += scalars(m, (("reservation", "memory.soft_limit_in_bytes"), ("kernel_tcp", "memory.kmem.tcp.limit_in_bytes"),
                       ("swappiness", "memory.swappiness")), d, field)
    if m.disable_oom_killer is not None:
        path = need(d, "memory.oom_control", at("disableOOMKiller"))
        out.append(Write(at("disableOOMKiller"), path, "1" if m.disable_oom_killer else "0"))
    if m.use_hierarchy is not None:
        path = need(d, "memory.use_hierarchy", at("useHierarchy"))
        out.append(Write(at("useHierarchy"), path, "1" if m.use_hierarchy else "0"))
    return out


def scalars(record: tuple[object, ...], files: tuple[tuple[str, str], ...], d: str, field: str) -> list[Write]:
    """One write for each set field of ``record`` named in ``files`` (field, file), in that order."""
    out = []
    for name, file in files:
        value = getattr(record, name)
        if value is not None:
            at = child(field, json_name(name))
            out.append(Write(at, need(d, file, at), str(value)))
    return out


_CPU = (("shares", "cpu.shares"), ("period", "cpu.cfs_period_us"), ("quota", "cpu.cfs_quota_us"),
        ("burst", "cpu.cfs_burst_us"), ("realtime_period", "cpu.rt_period_us"),
        ("realtime_runtime", "cpu.rt_runtime_us"), ("idle", "cpu.idle"))


def cpu(c: CPU, d: str, field: str) -> list[Write]:
    return scalars(c, _CPU, d, field)


def cpuset(c: CPU, d: str, field: str) -> list[Write]:
    """cpus and mems: the same files on v1 and v2."""
    return scalars(c, (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")), d, field)


def pids(limit: int, d: str, field: str) -> list[Write]:
    """pids.max: the same file on v1 and v2."""
    return [Write(field, need(d, "pids.max", field), "max" if limit < 0 else str(limit))]


THROTTLES = (  # BlockIO field, its JSON name, the v1 file (blkio.throttle.*), the v2 io.max key
    ("throttle_read_bps_device", "throttleReadBpsDevice", "read_bps_device", "rbps"),
    ("throttle_write_bps_device", "throttleWriteBpsDevice", "write_bps_device", "wbps"),
    ("throttle_read_iops_device", "throttleReadIOPSDevice", "read_iops_device", "riops"),
    ("throttle_write_iops_device", "throttleWriteIOPSDevice", "write_iops_device", "wiops"),
)


def blkio(b: BlockIO, d: str, field: str) -> list[Write]:
    # CFQ's blkio.weight went with CFQ (Linux 5.0); BFQ offers blkio.bfq.weight instead
    bfq = not os.path.exists(os.path.join(d, "blkio.weight"))
    prefix = "blkio.bfq." if bfq else "blkio."
    no_weight = "this kernel has neither blkio.weight (CFQ) nor blkio.bfq.weight (BFQ)"
    no_leaf = "this kernel has no blkio.leaf_weight: leaf weights went with the CFQ I/O scheduler (Linux 5.0)"
    out = []
    if b.weight is not None:
        out.append(Write(child(field, "weight"), need(d, prefix + "weight", child(field, "weight"), no_weight), str(b.weight)))
    if b.leaf_weight is not None:
        out.append(Write(child(field, "leafWeight"), need(d, "blkio.leaf_weight", child(field, "leafWeight"), no_leaf), str(b.leaf_weight)))
    for i, wd in enumerate(b.weight_device):
        at = f"{child(field, 'weightDevice')}[{i}]"
        if wd.weight is not None:
            path = need(d, prefix + "weight_device", child(at, "weight"), no_weight)
            out.append(Write(child(at, "weight"), path, f"{wd.major}:{wd.minor} {wd.weight}"))
        if wd.leaf_weight is not None:
            path = need(d, "blkio.leaf_weight_device", child(at, "leafWeight"), no_leaf)
            out.append(Write(child(at, "leafWeight"), path, f"{wd.major}:{wd.minor} {wd.leaf_weight}"))
    for attr, key, file, _ in THROTTLES:
        devices: tuple[ThrottleDevice, ...] = getattr(b, attr)
        for i, td in enumerate(devices):
            at = f"{child(field, key)}[{i}]"
            out.append(Write(at, need(d, "blkio.throttle." + file, at), f"{td.major}:{td.minor} {td.rate}"))
    return out


def hugetlb_sizes() -> list[str]:
    """The huge page sizes of this kernel, named as in hugetlb files ("2MB", "1GB")."""
    sizes = []
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except FileNotFoundError:
        return []
    for name in names:  # hugepages-2048kB
        kb = int(name.removeprefix("hugepages-").removesuffix("kB"))
        unit = 0
        while kb >= 1024 and kb % 1024 == 0 and unit < 2:
            kb, unit = kb // 1024, unit + 1
        sizes.append(f"{kb}{('KB', 'MB', 'GB')[unit]}")
    return sorted(sizes)


def hugetlb(limits: tuple[HugepageLimit, ...], d: str, field: str, suffix: str) -> list[Write]:
    """hugetlb.<size>.limit_in_bytes (v1) or .max (v2)."""
    out = []
    for i, h in enumerate(limits):
        at = f"{field}[{i}]"
        why = f"this kernel has no {h.page_size} huge pages (it has {', '.join(hugetlb_sizes()) or 'none'})"
        out.append(Write(child(at, "limit"), need(d, f"hugetlb.{h.page_size}.{suffix}", child(at, "pageSize"), why), str(h.limit)))
    return out


def net_cls(n: Network, d: str, field: str) -> list[Write]:
    assert n.class_id is not None
    return [Write(child(field, "classID"), need(d, "net_cls.classid", child(field, "classID")), str(n.class_id))]


def net_prio(n: Network, d: str, field: str) -> list[Write]:
    out = []
    for i, p in enumerate(n.priorities):
        at = f"{child(field, 'priorities')}[{i}]"
        out.append(Write(at, need(d, "net_prio.ifpriomap", at), f"{p.name} {p.priority}"))
    return out
