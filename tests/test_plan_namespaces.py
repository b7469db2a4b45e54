"""plan and spec, without starting a container: namespaces by path (checked on the host:
existence, nsfs, kind), configs without a mount namespace, time offsets, the scheduler and
the I/O priority."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
from test_plan import of_type, ops_in_header, plan_of, rootfs, spec_of  # noqa: F401 - a fixture

from aioruntime import plan
from aioruntime.errors import ConfigError
from aioruntime.namespaces import CLONE_NEWTIME
from aioruntime.plan import (
    CLONE_NEWNS,
    CLONE_NEWUSER,
    NAMESPACE_FLAGS,
    ChrootStep,
    IoPriorityStep,
    Join,
    MountStep,
    PivotRootStep,
    SchedulerStep,
    TerminalStep,
    WaitGoStep,
    WaitMapsStep,
    build_exec,
    encode,
)
from aioruntime.spec import Spec, default_spec

CODES = ops_in_header()


def namespaces(**paths: str) -> list[dict[str, str]]:
    """The default spec's namespaces, those named given a path (``mount=...``)."""
    out = []
    for ns in default_spec()["linux"]["namespaces"]:
        path = paths.pop(ns["type"], None)
        out.append({**ns, "path": path} if path else dict(ns))
    return out + [{"type": t, "path": p} for t, p in paths.items()]


def config_error(rootfs: Path, **overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        plan_of(rootfs, **overrides)
    return e.value


# -- namespaces by path -----------------------------------------------------------------------


def test_a_joined_namespace_is_not_made(rootfs: Path) -> None:
    p = plan_of(rootfs, linux={"namespaces": namespaces(network="/proc/self/ns/net", ipc="/proc/self/ns/ipc")})
    assert p.join == Join(
        (("/proc/self/ns/ipc", NAMESPACE_FLAGS["ipc"]), ("/proc/self/ns/net", NAMESPACE_FLAGS["network"])), init=True
    )
    assert not p.clone_flags & (NAMESPACE_FLAGS["network"] | NAMESPACE_FLAGS["ipc"])
    assert p.clone_flags & NAMESPACE_FLAGS["pid"] and p.clone_flags & CLONE_NEWNS
    assert not of_type(p, plan.LoopbackUpStep)  # a joined network is as it is


def test_no_join_without_paths(rootfs: Path) -> None:
    assert plan_of(rootfs).join is None


def test_the_user_namespace_is_joined_first_by_the_intermediate(rootfs: Path) -> None:
    p = plan_of(rootfs, linux={"namespaces": namespaces(user="/proc/self/ns/user", uts="/proc/self/ns/uts")})
    assert p.join is not None and p.join.namespaces[0] == ("/proc/self/ns/user", CLONE_NEWUSER)
    assert not p.clone_flags & CLONE_NEWUSER
    # no maps to wait for (none are written), but the init becomes the namespace's root
    assert p.steps[0] == WaitMapsStep(wait=False)
    assert not of_type(p, plan.MknodStep)  # no mknod in a user namespace: the host's nodes are bound
    assert any(s.source == "/dev/null" for s in of_type(p, MountStep))


def test_a_joined_cgroup_namespace_arrives_with_the_go(rootfs: Path) -> None:
    p = plan_of(rootfs, linux={"namespaces": namespaces(cgroup="/proc/self/ns/cgroup")})
    (go,) = of_type(p, WaitGoStep)
    assert (go.unshare, go.cgroupns) == (0, "/proc/self/ns/cgroup")
    assert p.join is None  # joined by the init itself, once in its cgroups
    wire = encode(p._replace(steps=(go,)), CODES, 40)
    assert struct.unpack_from("=III2Q", wire) == (CODES["WAIT_GO"], 2, 0, 0, 1)


@pytest.mark.parametrize(("path", "message"), [
    ("/nonexistent/ns", "cannot open the network namespace /nonexistent/ns: No such file or directory"),
    ("/etc/hostname", "/etc/hostname is not a namespace"),
    ("/proc/self/ns/uts", "/proc/self/ns/uts is a namespace of type uts, not network"),
    ("/proc/self", "is not a namespace"),
    ("fifo", "is not a namespace"),  # not opened: that would block
])
def test_a_bad_path_names_the_field(rootfs: Path, tmp_path: Path, path: str, message: str) -> None:
    if path == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    ns = namespaces(network=path)
    e = config_error(rootfs, linux={"namespaces": ns})
    assert e.path == f"linux.namespaces[{next(i for i, n in enumerate(ns) if n['type'] == 'network')}].path"
    assert message in str(e)


def test_a_net_sysctl_in_the_hosts_network_namespace_joined_by_path(rootfs: Path) -> None:
    # the write would change the host (runc refuses it too); another joined one is the container's
    e = config_error(rootfs, linux={"namespaces": namespaces(network="/proc/self/ns/net"),
                                    "sysctl": {"net.ipv4.ip_forward": "1"}})
    assert e.path == 'linux.sysctl["net.ipv4.ip_forward"]'


# -- without a mount namespace of its own -----------------------------------------------------


def no_mount_ns(**paths: str) -> dict[str, Any]:
    """runc's default config less its mount namespace (or with ``mount=path``) and what needs one."""
    ns = [n for n in namespaces(**paths) if n["type"] != "mount" or "path" in n]
    return {"linux": {"namespaces": ns, "maskedPaths": None, "readonlyPaths": None}, "root": {"readonly": False}}


@pytest.mark.parametrize("paths", [{}, {"mount": "/proc/self/ns/mnt"}])
def test_without_a_mount_namespace_only_a_chroot(rootfs: Path, paths: dict[str, str]) -> None:
    p = plan_of(rootfs, **no_mount_ns(**paths))
    assert not p.clone_flags & CLONE_NEWNS
    assert not of_type(p, MountStep) and not of_type(p, PivotRootStep) and not of_type(p, plan.MknodStep)
    assert of_type(p, ChrootStep) == [ChrootStep(str(rootfs))]
    assert p.steps.index(ChrootStep(str(rootfs))) < p.steps.index(of_type(p, WaitGoStep)[0])


def test_without_a_mount_namespace_the_terminal_comes_before_the_chroot(rootfs: Path) -> None:
    p = plan_of(rootfs, process={"terminal": True}, **no_mount_ns())
    (term,) = of_type(p, TerminalStep)
    assert not term.console  # no /dev/console to bind it on
    assert p.steps.index(term) < p.steps.index(of_type(p, ChrootStep)[0])


@pytest.mark.parametrize(("overrides", "where"), [
    ({"linux": {"maskedPaths": ["/proc/kcore"]}}, "linux.maskedPaths"),
    ({"linux": {"readonlyPaths": ["/proc/sys"]}}, "linux.readonlyPaths"),
    ({"root": {"readonly": True}}, "root.readonly"),
])
def test_without_a_mount_namespace_nothing_that_needs_mounts(rootfs: Path, overrides: dict[str, Any], where: str) -> None:
    config = no_mount_ns()
    config["linux"].update(overrides.get("linux", {}))
    config["root"].update(overrides.get("root", {}))
    e = config_error(rootfs, **config)
    assert e.path == where and "mount namespace" in str(e)


# -- time ----------------------------------------------------------------------------------


def test_time_offsets_go_to_the_intermediate(rootfs: Path) -> None:
    offsets = {"monotonic": {"secs": 3600, "nanosecs": 5}, "boottime": {"secs": 7200}}
    p = plan_of(rootfs, linux={"namespaces": [*namespaces(), {"type": "time"}], "timeOffsets": offsets})
    assert p.join is not None
    assert p.join.time_offsets == "monotonic 3600 5\nboottime 7200 0\n"
    assert p.join.init and not p.join.namespaces
    assert not p.clone_flags & CLONE_NEWTIME  # the intermediate unshares it, to write the offsets first


def test_a_time_namespace_without_offsets_is_a_clone_flag(rootfs: Path) -> None:
    p = plan_of(rootfs, linux={"namespaces": [*namespaces(), {"type": "time"}]})
    assert p.clone_flags & CLONE_NEWTIME and p.join is None


def spec_error(rootfs: Path, **overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        spec_of(rootfs, **overrides)
    return e.value


@pytest.mark.parametrize(("linux", "where", "message"), [
    ({"timeOffsets": {"monotonic": {"secs": 1}}}, "linux.timeOffsets", "need a new time namespace"),
    ({"namespaces": [{"type": "time", "path": "/proc/self/ns/time"}], "timeOffsets": {"boottime": {"secs": 1}}},
     "linux.timeOffsets", "without a path"),
    ({"namespaces": [{"type": "time"}], "timeOffsets": {"realtime": {"secs": 1}}},
     "linux.timeOffsets.realtime", "monotonic, boottime"),
    ({"namespaces": [{"type": "time"}], "timeOffsets": {"boottime": {"nanosecs": 10**9}}},
     "linux.timeOffsets.boottime.nanosecs", "999999999"),
])
def test_bad_time_offsets(rootfs: Path, linux: dict[str, Any], where: str, message: str) -> None:
    e = spec_error(rootfs, linux=linux)
    assert e.path == where and message in str(e)


def test_a_time_offset_below_zero_is_refused(rootfs: Path) -> None:
    e = config_error(rootfs, linux={"namespaces": [*namespaces(), {"type": "time"}],
                                    "timeOffsets": {"monotonic": {"secs": -(2**40)}}})
    assert e.path == "linux.timeOffsets.monotonic.secs" and "below zero" in str(e)


def test_exec_joins_the_time_namespace(rootfs: Path) -> None:
    s = spec_of(rootfs, linux={"namespaces": [*namespaces(), {"type": "time"}]})
    assert s.process is not None
    p = build_exec(s.process, linux=s.linux, rootfs=str(rootfs), init_pid=42, cgroup1=(), cgroup2="")
    assert p.join is not None and ("/proc/42/ns/time", CLONE_NEWTIME) in p.join.namespaces


# -- scheduler and I/O priority -------------------------------------------------------------


def test_scheduler_and_io_priority_steps(rootfs: Path) -> None:
    p = plan_of(rootfs, process={
        "scheduler": {"policy": "SCHED_BATCH", "nice": 7, "flags": ["SCHED_FLAG_RESET_ON_FORK"]},
        "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 6},
    })
    assert of_type(p, SchedulerStep) == [SchedulerStep(3, 0x01, 7)]
    assert of_type(p, IoPriorityStep) == [IoPriorityStep(2 << 13 | 6)]
    # before the capabilities are dropped: a real-time policy needs CAP_SYS_NICE
    assert p.steps.index(of_type(p, SchedulerStep)[0]) < p.steps.index(of_type(p, plan.CapsStep)[0])


def test_exec_gets_the_scheduler_too(rootfs: Path) -> None:
    s = spec_of(rootfs, process={"scheduler": {"policy": "SCHED_RR", "priority": 10}})
    assert s.process is not None
    p = build_exec(s.process, linux=s.linux, rootfs=str(rootfs), init_pid=42, cgroup1=(), cgroup2="")
    assert of_type(p, SchedulerStep) == [SchedulerStep(2, 0, 0, 10)]


def test_deadline_scheduler_wire(rootfs: Path) -> None:
    step = SchedulerStep(6, 0, 0, 0, 10_000_000, 30_000_000, 30_000_000)
    wire = encode(plan.Plan((step,), 0, str(rootfs)), CODES, 40)
    assert struct.unpack("=III7Q", wire) == (CODES["SCHED"], 7, 0, 6, 0, 0, 0, 10_000_000, 30_000_000, 30_000_000)


@pytest.mark.parametrize(("process", "where", "message"), [
    ({"scheduler": {"nice": 1}}, "process.scheduler.policy", "required"),
    ({"scheduler": {"policy": "SCHED_FOO"}}, "process.scheduler.policy", "SCHED_OTHER"),
    ({"scheduler": {"policy": "SCHED_ISO"}}, "process.scheduler.policy", "does not implement"),
    ({"scheduler": {"policy": "SCHED_OTHER", "nice": 20}}, "process.scheduler.nice", "-20 to 19"),
    ({"scheduler": {"policy": "SCHED_FIFO"}}, "process.scheduler.priority", "1 to 99"),
    ({"scheduler": {"policy": "SCHED_OTHER", "priority": 5}}, "process.scheduler.priority", "SCHED_FIFO and SCHED_RR"),
    ({"scheduler": {"policy": "SCHED_BATCH", "runtime": 5}}, "process.scheduler", "SCHED_DEADLINE"),
    ({"scheduler": {"policy": "SCHED_DEADLINE", "runtime": 10**6, "deadline": 10**5}}, "process.scheduler", "runtime <= deadline"),
    ({"scheduler": {"policy": "SCHED_DEADLINE", "runtime": 10, "deadline": 10**5}}, "process.scheduler", "1024"),
    ({"scheduler": {"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]}}, "process.scheduler.flags[0]", "RESET_ON_FORK"),
    ({"ioPriority": {"class": "IOPRIO_CLASS_NONE"}}, "process.ioPriority.class", "IOPRIO_CLASS_RT"),
    ({"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}}, "process.ioPriority.priority", "0 to 7"),
])
def test_bad_process_settings(process: dict[str, Any], where: str, message: str) -> None:
    d = default_spec()
    d["process"].update(process)
    with pytest.raises(ConfigError) as e:
        Spec.from_dict(d)
    assert e.value.path == where and message in str(e.value)
