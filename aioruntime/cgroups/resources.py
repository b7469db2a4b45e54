"""Applying ``linux.resources`` to a container's cgroup, on v1, v2 or a mix of both.

Everything is planned and checked before the first write: which controller holds each
section (an unavailable one is an error naming the field), which files exist, which
values fit together. The writes then go in order; a refusal puts back what was changed,
so a create or an update is applied entirely or not at all.
"""


import os
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .._native import ffi, lib
from ..errors import IgnoredSettingWarning, ResourceError
from ..spec.check import child
from ..spec.model import Spec
from ..spec.resources import DeviceRule, Memory, Resources, to_dict
from . import devices as devs
from . import files, v1, v2
from .files import Write, need
from .placement import Cgroup, locate


def plan(change: Resources, merged: Resources, cg: Cgroup, field: str = "linux.resources") -> list[Write]:
    """The writes that apply ``change``; ``merged`` (what will stand after it) supplies the
    values written together with a changed one (cgroup2's cpu.max, memory.swap.max)."""
    out: list[Write] = []

    def where(controller: str, key: str) -> tuple[str, int, str]:
        at = child(field, key)
        return cg.dir(controller, at), cg.versions[controller], at

    if change.memory is not None:
        d, version, at = where("memory", "memory")
        assert merged.memory is not None
        m = _without_ignored_kernel_memory(change.memory, d, version, at)
        out += v1.memory(m, d, at) if version == 1 else v2.memory(m, merged.memory, d, at)
    c = change.cpu
    if c is not None:
        if (c.shares, c.quota, c.burst, c.period, c.realtime_runtime, c.realtime_period, c.idle) != (None,) * 7:
            d, version, at = where("cpu", "cpu")
            assert merged.cpu is not None
            out += v1.cpu(c, d, at) if version == 1 else v2.cpu(c, merged.cpu, d, at)
        if c.cpus is not None or c.mems is not None:
            d, _, at = where("cpuset", "cpu")
            out += v1.cpuset(c, d, at)
    if change.pids is not None and change.pids.limit is not None:
        d, _, at = where("pids", "pids")
        out += v1.pids(change.pids.limit, d, child(at, "limit"))
    if change.block_io is not None:
        d, version, at = where("blkio", "blockIO")
        out += v1.blkio(change.block_io, d, at) if version == 1 else v2.io(change.block_io, d, at)
    if change.hugepage_limits:
        d, version, at = where("hugetlb", "hugepageLimits")
        out += v1.hugetlb(change.hugepage_limits, d, at, "limit_in_bytes" if version == 1 else "max")
    n = change.network
    if n is not None and n.class_id is not None:
        d, _, at = where("net_cls", "network")
        out += v1.net_cls(n, d, at)
    if n is not None and n.priorities:
        d, _, at = where("net_prio", "network")
        out += v1.net_prio(n, d, at)
    for name, r in change.rdma.items():
        d, _, at = where("rdma", "rdma")
        at = child(at, name)
        limits = f"hca_handle={'max' if r.hca_handles is None else r.hca_handles} " \
                 f"hca_object={'max' if r.hca_objects is None else r.hca_objects}"
        out.append(Write(at, need(d, "rdma.max", at), f"{name} {limits}"))
    for name, value in change.unified.items():  # last, so it can override what the fields set
        at = child(child(field, "unified"), name)
        if cg.unified is None:
            raise ResourceError(at, "there is no cgroup v2 hierarchy to write it to")
        path = need(cg.unified, name, at, f"the container's cgroup v2 directory has no {name}: "
                    "is its controller enabled on the unified hierarchy?")
        out.append(Write(at, path, value))
    return out


def _without_ignored_kernel_memory(m: Memory, d: str, version: int, field: str) -> Memory:
    """As runc 1.1: kernel memory limits are ignored, with a warning. Linux 6.x still has
    memory.kmem.limit_in_bytes but no longer enforces it, and cgroup v2 has neither limit;
    the kernel TCP limit still works on v1, so it is applied there."""
    ignored = ["kernel"] if m.kernel is not None else []
    if m.kernel_tcp is not None and (version == 2 or not os.path.exists(os.path.join(d, "memory.kmem.tcp.limit_in_bytes"))):
        ignored.append("kernelTCP")
    if not ignored:
        return m
    import warnings

    names = " and ".join(child(field, name) for name in ignored)
    warnings.warn(f"{names}: kernel memory settings are ignored and will be removed", IgnoredSettingWarning, stacklevel=2)
    return m._replace(kernel=None, kernel_tcp=None if "kernelTCP" in ignored else m.kernel_tcp)


# -- devices -----------------------------------------------------------------------------------


class DeviceChange(NamedTuple):
    field: str
    version: int
    directory: str
    old: devs.DeviceState
    new: devs.DeviceState


def device_state(rules: Sequence[DeviceRule] | None, device_paths: Iterable[str]) -> devs.DeviceState:
    """Where the config's rules plus runc's defaults leave a new cgroup."""
    return devs.emulate(devs.effective_rules(rules, device_paths))


def plan_devices(
    old: devs.DeviceState, new: devs.DeviceState, cg: Cgroup, field: str = "linux.resources.devices"
) -> DeviceChange | None:
    """The change from the rules in force (``old``) to ``new``; None when they are the same."""
    if new == old:
        return None
    d = cg.dir("devices", field)
    return DeviceChange(field, cg.versions["devices"], d, old, new)


def _bpf_error(field: str, err: int, log: str) -> ResourceError:
    detail = f": {log.strip().splitlines()[-1]}" if log.strip() else ""
    return ResourceError(field, f"cannot install the cgroup v2 device program: {os.strerror(err)}{detail}")


def apply_devices(c: DeviceChange) -> None:
    """v1: the differing rules (undone on failure); v2: a new BPF program replacing the old."""
    if c.version == 1:
        writes = [Write(c.field, os.path.join(c.directory, f), line) for f, line in devs.transition(c.old, c.new)]
        try:
            files.apply(writes, undo=False)
        except ResourceError:
            back = [Write(c.field, os.path.join(c.directory, f), line) for f, line in devs.transition(c.new, c.old)]
            files.revert([(w.path, w.value) for w in back])
            raise
        return
    fd = os.open(c.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if c.new == devs.OPEN:
            rc = lib.aio_bpf_devices_detach(fd)
            log = ""
        else:
            code = devs.program(c.new)
            buf = ffi.new("char[]", 16384)
            rc = lib.aio_bpf_devices_attach(fd, code, len(code) // 8, buf, 16384)
            log = ffi.string(buf).decode(errors="replace")
    finally:
        os.close(fd)
    if rc < 0:
        raise _bpf_error(c.field, -rc, log)


def apply(
    change: Resources, merged: Resources, cg: Cgroup, devices: DeviceChange | None, *, new_cgroup: bool
) -> None:
    """Plan, check, then write ``change`` (and the device rules): all of it or, on any
    refusal, nothing (a new cgroup is removed by its caller instead of undone)."""
    writes = plan(change, merged, cg)
    undo = files.apply(writes, undo=not new_cgroup)
    if devices is not None:
        try:
            apply_devices(devices)
        except BaseException:
            files.revert(undo)
            raise


def apply_config(spec: Spec, paths: dict[str, str], *, rootless: bool = False) -> None:
    """Apply a config's ``linux.resources`` to the container's new cgroups (create, restore),
    before anything joins them. Rootless, device rules are left out, as runc leaves them
    (the device cgroup is not delegated), and without cgroups of its own a limit is an
    error rather than ignored."""
    resources = spec.linux.resources or Resources()
    if rootless:
        resources = resources._replace(devices=None)
        if not paths and to_dict(resources):
            raise ResourceError("linux.resources", "an unprivileged runtime without a delegated cgroup cannot set limits")
    cg = locate(paths)
    devices = None
    if not rootless:
        new = device_state(resources.devices, (d.path for d in spec.linux.devices))
        devices = plan_devices(devs.OPEN, new, cg)
    apply(resources, resources, cg, devices, new_cgroup=True)
