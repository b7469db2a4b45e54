"""aioruntime.plan: the spec turned into the init's flat list of steps, without a kernel.

Every test builds a ``Spec`` from runc's default config (edited) around a small directory
that stands in for the rootfs, and looks at the steps ``plan.build`` returns: what is
mounted where with which flags, in which order, and what is refused.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from aioruntime import plan
from aioruntime.errors import ConfigError
from aioruntime.plan import (
    WaitMapsStep,
    CLONE_NEWCGROUP,
    DEFAULT_PATH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_UNBINDABLE,
    NAMESPACE_FLAGS,
    BoundingStep,
    CapsStep,
    CgroupMount,
    ChdirStep,
    DomainnameStep,
    ExecStep,
    HostnameStep,
    KeepCapsStep,
    MaskStep,
    MknodStep,
    MountStep,
    MoveRootStep,
    NoNewPrivsStep,
    PivotRootStep,
    Plan,
    ReadonlyStep,
    RlimitStep,
    Step,
    SymlinkStep,
    UmaskStep,
    UserStep,
    WaitGoStep,
    build,
    encode,
    mount_options,
)
from aioruntime.spec import Spec, default_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.busybox_rootfs import merge  # noqa: E402

HEADER = Path(__file__).resolve().parents[1] / "aioruntime" / "_clone.h"
S_IFCHR = 0o020000

# The default spec's three capabilities, by kernel number.
CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE = 5, 10, 29
DEFAULT_CAPS = (1 << CAP_KILL) | (1 << CAP_NET_BIND_SERVICE) | (1 << CAP_AUDIT_WRITE)

FS_STEPS = (plan.MountStep, plan.MkdirStep, MknodStep, SymlinkStep, plan.UnlinkStep, PivotRootStep,
            MoveRootStep, MaskStep, ReadonlyStep)

CGROUPS = (
    CgroupMount("cpu", "/sys/fs/cgroup/cpu/p/c", "cgroup", "cpu"),
    CgroupMount("memory", "/sys/fs/cgroup/memory/p/c", "cgroup", "memory"),
    CgroupMount("systemd", "/sys/fs/cgroup/systemd/p/c", "cgroup", "name=systemd"),
    CgroupMount("unified", "/sys/fs/cgroup/unified/p/c", "cgroup2", ""),
)


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A stand-in rootfs: a directory with the /etc/passwd that HOME is looked up in."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
                                     "nohome:x:1001:1001:::/bin/sh\n")
    return root


def spec_of(rootfs: Path, **overrides: Any) -> Spec:
    """runc's default spec around ``rootfs``, with ``overrides`` merged in (None removes a key)."""
    d = default_spec()
    d["process"]["terminal"] = False
    d["root"]["path"] = str(rootfs)
    return Spec.from_dict(merge(d, overrides))


def plan_of(rootfs: Path, *, cgroups: Iterable[CgroupMount] = (), no_pivot: bool = False, **overrides: Any) -> Plan:
    return build(spec_of(rootfs, **overrides), bundle=str(rootfs.parent), cgroups=cgroups, no_pivot=no_pivot)


def with_mounts(*extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The default spec's mounts followed by ``extra``."""
    mounts: list[dict[str, Any]] = default_spec()["mounts"]
    return mounts + [dict(m) for m in extra]


def of_type(p: Plan, kind: type[Step]) -> list[Any]:
    return [s for s in p.steps if isinstance(s, kind)]


def index(p: Plan, kind: type[Step]) -> int:
    return next(i for i, s in enumerate(p.steps) if isinstance(s, kind))


def typed(steps: Iterable[object]) -> list[tuple[str, object]]:
    """Steps with their class names, so that equal fields of different steps never compare equal."""
    return [(type(s).__name__, s) for s in steps]


def find(p: Plan, step: Step) -> int:
    """The index of ``step`` (same class, same fields) in the plan."""
    return typed(p.steps).index((type(step).__name__, step))


def mounts_at(p: Plan, target: str | Path) -> list[MountStep]:
    return [s for s in p.steps if isinstance(s, MountStep) and s.target == str(target)]


def pivot_at(p: Plan) -> int:
    return next(i for i, s in enumerate(p.steps) if isinstance(s, (PivotRootStep, MoveRootStep)))


def ops_in_header() -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"#define AIO_OP_(\w+) (\d+)", HEADER.read_text())}


def max_in_header(name: str) -> int:
    m = re.search(rf"#define {name} (\d+)", HEADER.read_text())
    assert m, name
    return int(m[1])


# --- mount options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, flags",
    [
        (["nosuid", "nodev", "noexec"], MS_NOSUID | MS_NODEV | MS_NOEXEC),
        (["ro"], MS_RDONLY),
        (["ro", "rw"], 0),  # rw clears an earlier ro
        (["rw", "ro"], MS_RDONLY),
        (["nosuid", "suid"], 0),
        (["strictatime", "relatime"], MS_STRICTATIME | MS_RELATIME),
        (["relatime", "norelatime"], 0),
        (["bind"], MS_BIND),
        (["rbind"], MS_BIND | MS_REC),
        (["nosuid", "noexec", "nodev", "relatime", "ro"], MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RELATIME | MS_RDONLY),
    ],
)
def test_mount_option_flags(options: list[str], flags: int) -> None:
    assert mount_options(options) == (flags, 0, "")


@pytest.mark.parametrize(
    "options, propagation",
    [
        (["private"], MS_PRIVATE),
        (["rprivate"], MS_PRIVATE | MS_REC),
        (["shared"], MS_SHARED),
        (["rshared"], MS_SHARED | MS_REC),
        (["slave"], MS_SLAVE),
        (["rslave"], MS_SLAVE | MS_REC),
        (["unbindable"], MS_UNBINDABLE),
        (["runbindable"], MS_UNBINDABLE | MS_REC),
    ],
)
def test_mount_option_propagation(options: list[str], propagation: int) -> None:
    flags, prop, data = mount_options(["nosuid", *options])
    assert (flags, prop, data) == (MS_NOSUID, propagation, "")


def test_mount_option_data_keeps_order_and_drops_runtime_only_options() -> None:
    options = ["nosuid", "mode=755", "newinstance", "size=65536k", "tmpcopyup", "ptmxmode=0666", "gid=5"]
    assert mount_options(options) == (MS_NOSUID, 0, "mode=755,newinstance,size=65536k,ptmxmode=0666,gid=5")


def test_mount_steps_for_plain_filesystems(rootfs: Path) -> None:
    p = plan_of(rootfs)
    assert mounts_at(p, rootfs / "proc") == [MountStep("proc", f"{rootfs}/proc", "proc", "", 0, make=1)]
    assert mounts_at(p, rootfs / "dev") == [
        MountStep("tmpfs", f"{rootfs}/dev", "tmpfs", "mode=755,size=65536k", MS_NOSUID | MS_STRICTATIME, make=1)
    ]
    assert mounts_at(p, rootfs / "dev/pts") == [
        MountStep("devpts", f"{rootfs}/dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5",
                  MS_NOSUID | MS_NOEXEC, make=1)
    ]
    assert mounts_at(p, rootfs / "dev/mqueue") == [
        MountStep("mqueue", f"{rootfs}/dev/mqueue", "mqueue", "", MS_NOSUID | MS_NOEXEC | MS_NODEV, make=1)
    ]
    assert mounts_at(p, rootfs / "sys") == [
        MountStep("sysfs", f"{rootfs}/sys", "sysfs", "", MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY, make=1)
    ]


def test_mounts_follow_the_config_order(rootfs: Path) -> None:
    p = plan_of(rootfs)
    firsts = []
    for s in of_type(p, MountStep):
        if s.fstype and s.target not in firsts:
            firsts.append(s.target)
    dests = [m["destination"] for m in default_spec()["mounts"]]
    assert firsts[: len(dests)] == [f"{rootfs}{d}" for d in dests]


def test_mount_propagation_option_adds_a_step_after_the_mount(rootfs: Path) -> None:
    p = plan_of(rootfs, mounts=with_mounts({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                                            "options": ["rshared", "size=1m"]}))
    assert mounts_at(p, rootfs / "mnt") == [
        MountStep("tmpfs", f"{rootfs}/mnt", "tmpfs", "size=1m", 0, make=1),
        MountStep("", f"{rootfs}/mnt", "", "", MS_SHARED | MS_REC),
    ]


def test_mount_destination_cannot_climb_out_of_rootfs(rootfs: Path) -> None:
    p = plan_of(rootfs, mounts=with_mounts({"destination": "/../../etc", "type": "tmpfs", "source": "tmpfs"}))
    assert mounts_at(p, rootfs / "etc")
    before_pivot = of_type(Plan(p.steps[: pivot_at(p)], p.clone_flags, p.rootfs), MountStep)[1:]  # after "/" itself
    assert all(s.target == str(rootfs) or s.target.startswith(f"{rootfs}/") for s in before_pivot)


# --- bind mounts -----------------------------------------------------------------------------


def test_bind_mount_becomes_bind_then_remount(rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    p = plan_of(rootfs, mounts=with_mounts({"destination": "/data", "type": "bind", "source": str(src),
                                            "options": ["rbind", "ro", "nosuid", "nodev"]}))
    assert mounts_at(p, rootfs / "data") == [
        MountStep(str(src), f"{rootfs}/data", "", "", MS_BIND | MS_REC, make=1),
        MountStep("", f"{rootfs}/data", "", "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REC),
    ]


def test_bind_mount_without_other_flags_is_one_step(rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    p = plan_of(rootfs, mounts=with_mounts({"destination": "/data", "type": "none", "source": str(src),
                                            "options": ["bind"]}))
    assert mounts_at(p, rootfs / "data") == [MountStep(str(src), f"{rootfs}/data", "", "", MS_BIND, make=1)]


def test_bind_mount_with_propagation(rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    p = plan_of(rootfs, mounts=with_mounts({"destination": "/data", "source": str(src),
                                            "options": ["rbind", "rslave"]}))
    assert mounts_at(p, rootfs / "data") == [
        MountStep(str(src), f"{rootfs}/data", "", "", MS_BIND | MS_REC, make=1),
        MountStep("", f"{rootfs}/data", "", "", MS_SLAVE | MS_REC),
    ]


def test_bind_type_without_bind_option_is_a_bind_or_refused(rootfs: Path, tmp_path: Path) -> None:
    """``"type": "bind"`` without ``bind``/``rbind`` in the options: the plan treats it as a bind
    mount (the source must exist, a file source gets a file), so the mount step must carry
    MS_BIND, as podman users expect; the other consistent answer is crun's, a ConfigError
    naming the options. Not a mount(2) call with neither MS_BIND nor a filesystem type."""
    src = tmp_path / "src"
    src.mkdir()
    mounts = with_mounts({"destination": "/data", "type": "bind", "source": str(src), "options": ["ro"]})
    try:
        p = plan_of(rootfs, mounts=mounts)
    except ConfigError as e:
        assert e.path == f"mounts[{len(mounts) - 1}].options"
        return
    steps = mounts_at(p, rootfs / "data")
    assert steps[0].source == str(src)
    assert steps[0].flags & MS_BIND
    assert steps[-1].flags & MS_RDONLY and steps[-1].flags & MS_REMOUNT


def test_file_bind_source_makes_a_file(rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "resolv.conf"
    src.write_text("nameserver 127.0.0.1\n")
    p = plan_of(rootfs, mounts=with_mounts({"destination": "/etc/resolv.conf", "type": "bind", "source": str(src),
                                            "options": ["rbind"]}))
    assert mounts_at(p, rootfs / "etc/resolv.conf") == [
        MountStep(str(src), f"{rootfs}/etc/resolv.conf", "", "", MS_BIND | MS_REC, make=2)
    ]


def test_relative_bind_source_is_taken_from_the_bundle(rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    p = plan_of(rootfs, mounts=with_mounts({"destination": "/shared", "source": "shared", "options": ["bind"]}))
    assert mounts_at(p, rootfs / "shared")[0].source == str(tmp_path / "shared")


def test_missing_bind_source_names_the_mount(rootfs: Path, tmp_path: Path) -> None:
    mounts = with_mounts({"destination": "/data", "type": "bind", "source": str(tmp_path / "nope"),
                          "options": ["rbind"]})
    with pytest.raises(ConfigError) as e:
        plan_of(rootfs, mounts=mounts)
    assert e.value.path == f"mounts[{len(mounts) - 1}].source"
    assert str(tmp_path / "nope") in str(e.value)


# --- cgroup mounts ---------------------------------------------------------------------------


def test_cgroup_mount_is_a_tmpfs_with_one_bind_per_hierarchy(rootfs: Path) -> None:
    p = plan_of(rootfs, cgroups=CGROUPS)
    top = f"{rootfs}/sys/fs/cgroup"
    ro = MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RELATIME | MS_RDONLY
    expected = [MountStep("tmpfs", top, "tmpfs", "mode=755", MS_NOSUID | MS_NODEV | MS_NOEXEC, make=1)]
    for cg in CGROUPS:
        expected += [
            MountStep(cg.host_path, f"{top}/{cg.name}", "", "", MS_BIND | MS_REC, make=1),
            MountStep("", f"{top}/{cg.name}", "", "", MS_BIND | MS_REMOUNT | ro),
        ]
    got = [s for s in of_type(p, MountStep) if s.target == top or s.target.startswith(top + "/")]
    assert got[: len(expected)] == expected
    # then the tmpfs itself is made read-only
    assert got[len(expected):] == [MountStep("", top, "", "", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)]
    tasks = tuple(f"{cg.host_path}/tasks" for cg in CGROUPS if cg.fstype == "cgroup")
    assert of_type(p, WaitGoStep) == [WaitGoStep(tasks, 0)]  # v1 joined by the init; cgroup2 cloned into


def test_cgroup_mount_in_a_cgroup_namespace_mounts_each_hierarchy(rootfs: Path) -> None:
    namespaces = default_spec()["linux"]["namespaces"] + [{"type": "cgroup"}]
    p = plan_of(rootfs, cgroups=CGROUPS, linux={"namespaces": namespaces})
    top = f"{rootfs}/sys/fs/cgroup"
    ro = MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RELATIME | MS_RDONLY
    got = [s for s in of_type(p, MountStep) if s.target.startswith(top + "/")]
    assert got == [MountStep(cg.fstype, f"{top}/{cg.name}", cg.fstype, cg.options, ro, make=1) for cg in CGROUPS]
    # the cgroup namespace is unshared once the init is in its cgroups, before they are mounted
    tasks = tuple(f"{cg.host_path}/tasks" for cg in CGROUPS if cg.fstype == "cgroup")
    assert of_type(p, WaitGoStep) == [WaitGoStep(tasks, CLONE_NEWCGROUP)]
    assert not p.clone_flags & CLONE_NEWCGROUP
    first_cgroup_mount = min(p.steps.index(s) for s in of_type(p, MountStep) if s.target.startswith(top))
    assert index(p, WaitGoStep) < first_cgroup_mount


def test_wait_for_the_cgroups_comes_before_any_cgroup_mount(rootfs: Path) -> None:
    """The parent makes the cgroups the hierarchies are bound from while the init builds the
    rootfs: the init waits for it before the first cgroup mount."""
    p = plan_of(rootfs, cgroups=CGROUPS)
    top = f"{rootfs}/sys/fs/cgroup"
    assert len(of_type(p, WaitGoStep)) == 1
    first_cgroup_mount = min(p.steps.index(s) for s in of_type(p, MountStep) if s.target.startswith(top))
    assert index(p, WaitGoStep) < first_cgroup_mount


def test_wait_for_the_cgroups_without_a_cgroup_mount(rootfs: Path) -> None:
    mounts = [m for m in default_spec()["mounts"] if m["type"] != "cgroup"]
    p = plan_of(rootfs, cgroups=CGROUPS, mounts=mounts)
    assert len(of_type(p, WaitGoStep)) == 1
    assert index(p, WaitGoStep) < index(p, ExecStep)


def test_cgroup_mount_without_hierarchies_is_just_the_tmpfs(rootfs: Path) -> None:
    p = plan_of(rootfs)
    top = f"{rootfs}/sys/fs/cgroup"
    assert [s.fstype for s in of_type(p, MountStep) if s.target.startswith(top)] == ["tmpfs", ""]


# --- devices ------------------------------------------------------------------------------


def test_default_devices_and_symlinks(rootfs: Path) -> None:
    p = plan_of(rootfs)
    nodes = {s.path: (s.mode, s.major, s.minor, s.uid, s.gid) for s in of_type(p, MknodStep)}
    assert nodes == {
        f"{rootfs}/dev/{name}": (S_IFCHR | 0o666, major, minor, 0, 0)
        for name, major, minor in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                                   ("urandom", 1, 9), ("tty", 5, 0)]
    }
    links = {s.link: s.target for s in of_type(p, SymlinkStep)}
    assert {k: v for k, v in links.items() if not k.endswith("/dev/core")} == {
        f"{rootfs}/dev/fd": "/proc/self/fd",
        f"{rootfs}/dev/stdin": "/proc/self/fd/0",
        f"{rootfs}/dev/stdout": "/proc/self/fd/1",
        f"{rootfs}/dev/stderr": "/proc/self/fd/2",
        f"{rootfs}/dev/ptmx": "pts/ptmx",
    }
    # devices go into the /dev tmpfs: after it is mounted, before the pivot
    dev_mount = p.steps.index(mounts_at(p, rootfs / "dev")[0])
    assert all(dev_mount < p.steps.index(s) < pivot_at(p) for s in of_type(p, MknodStep) + of_type(p, SymlinkStep))


def test_config_devices_are_added(rootfs: Path) -> None:
    p = plan_of(rootfs, linux={"devices": [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600, "uid": 7, "gid": 8},
        {"path": "/dev/sub/loop0", "type": "b", "major": 7, "minor": 0},
        {"path": "/dev/fifo", "type": "p"},
    ]})
    nodes = {s.path: (s.mode, s.major, s.minor, s.uid, s.gid) for s in of_type(p, MknodStep)}
    assert nodes[f"{rootfs}/dev/fuse"] == (S_IFCHR | 0o600, 10, 229, 7, 8)
    assert nodes[f"{rootfs}/dev/sub/loop0"] == (0o060000 | 0o666, 7, 0, 0, 0)
    assert nodes[f"{rootfs}/dev/fifo"] == (0o010000 | 0o666, 0, 0, 0, 0)
    mkdirs = [s.path for s in of_type(p, plan.MkdirStep)]
    assert f"{rootfs}/dev/sub" in mkdirs


def test_config_device_overrides_a_default_one(rootfs: Path) -> None:
    """As runc: a config entry for a default device's path takes priority over the default."""
    p = plan_of(rootfs, linux={"devices": [
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 0, "gid": 0},
    ]})
    nodes = [s for s in of_type(p, MknodStep) if s.path == f"{rootfs}/dev/null"]
    assert [(s.mode, s.major, s.minor) for s in nodes] == [(S_IFCHR | 0o600, 1, 3)]


def test_no_devices_when_dev_is_a_bind_mount(rootfs: Path) -> None:
    p = plan_of(rootfs, mounts=[{"destination": "/proc", "type": "proc", "source": "proc"},
                                {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}])
    assert not of_type(p, MknodStep)
    assert not of_type(p, SymlinkStep)
    assert mounts_at(p, rootfs / "dev")[0] == MountStep("/dev", f"{rootfs}/dev", "", "", MS_BIND | MS_REC, make=1)


# --- root, pivot, masks --------------------------------------------------------------------


def test_root_is_made_slave_then_bound_onto_itself(rootfs: Path) -> None:
    p = plan_of(rootfs)
    assert p.rootfs == str(rootfs)
    assert typed(p.steps[:2]) == typed([
        MountStep("", "/", "", "", MS_SLAVE | MS_REC),
        MountStep(str(rootfs), str(rootfs), "", "", MS_BIND | MS_REC),
    ])


@pytest.mark.parametrize("propagation", ["private", "rprivate", "slave", "rslave"])
def test_rootfs_propagation_private_or_slave(rootfs: Path, propagation: str) -> None:
    p = plan_of(rootfs, linux={"rootfsPropagation": propagation})
    assert p.steps[0] == MountStep("", "/", "", "", plan.PROPAGATION[propagation])
    assert not [s for s in p.steps[pivot_at(p):] if isinstance(s, MountStep) and s.target == "/"]


@pytest.mark.parametrize("propagation", ["shared", "rshared", "unbindable", "runbindable"])
def test_rootfs_propagation_shared_is_set_after_the_pivot(rootfs: Path, propagation: str) -> None:
    p = plan_of(rootfs, linux={"rootfsPropagation": propagation})
    assert p.steps[0] == MountStep("", "/", "", "", MS_SLAVE | MS_REC)  # nothing leaks back while mounting
    assert p.steps[pivot_at(p) + 1] == MountStep("", "/", "", "", plan.PROPAGATION[propagation])


def test_pivot_root(rootfs: Path) -> None:
    p = plan_of(rootfs)
    assert of_type(p, PivotRootStep) == [PivotRootStep(str(rootfs))]
    assert not of_type(p, MoveRootStep)


def test_no_pivot_moves_the_root(rootfs: Path) -> None:
    p = plan_of(rootfs, no_pivot=True)
    assert of_type(p, MoveRootStep) == [MoveRootStep(str(rootfs))]
    assert not of_type(p, PivotRootStep)


def test_every_host_path_step_comes_before_the_pivot(rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    p = plan_of(rootfs, cgroups=CGROUPS,
                mounts=with_mounts({"destination": "/data", "source": str(tmp_path / "src"), "options": ["rbind", "ro"]}))
    at = pivot_at(p)
    for s in p.steps[:at]:
        if isinstance(s, MountStep) and s.target != "/":
            assert s.target == str(rootfs) or s.target.startswith(f"{rootfs}/"), s
    for s in p.steps[at + 1:]:
        assert not isinstance(s, (plan.MkdirStep, MknodStep, SymlinkStep, plan.UnlinkStep)), s
        if isinstance(s, MountStep):
            assert not s.target.startswith(str(rootfs)), s


def test_readonly_and_masked_paths_come_after_the_pivot_as_container_paths(rootfs: Path) -> None:
    p = plan_of(rootfs)
    at = pivot_at(p)
    linux = default_spec()["linux"]
    readonly = [(i, s) for i, s in enumerate(p.steps) if isinstance(s, ReadonlyStep) and s.bind]
    masked = [(i, s) for i, s in enumerate(p.steps) if isinstance(s, MaskStep)]
    assert [s.path for _, s in readonly] == linux["readonlyPaths"]
    assert [s.path for _, s in masked] == linux["maskedPaths"]
    assert all(i > at for i, _ in readonly + masked)


def test_readonly_root_is_the_last_filesystem_step(rootfs: Path) -> None:
    p = plan_of(rootfs)
    fs = [s for s in p.steps if isinstance(s, FS_STEPS)]
    assert typed(fs[-1:]) == typed([ReadonlyStep("/", bind=False)])
    assert of_type(p, ReadonlyStep).count(ReadonlyStep("/", bind=False)) == 1


def test_writable_root_has_no_readonly_step_for_it(rootfs: Path) -> None:
    p = plan_of(rootfs, root={"readonly": False})
    assert ("ReadonlyStep", ReadonlyStep("/", bind=False)) not in typed(p.steps)
    assert isinstance([s for s in p.steps if isinstance(s, FS_STEPS)][-1], MaskStep)


# --- identity and process -----------------------------------------------------------------------


def test_hostname_and_domainname(rootfs: Path) -> None:
    p = plan_of(rootfs, hostname="box", domainname="example.org")
    assert of_type(p, HostnameStep) == [HostnameStep("box")]
    assert of_type(p, DomainnameStep) == [DomainnameStep("example.org")]
    assert index(p, HostnameStep) > pivot_at(p)


def test_no_hostname_step_without_a_hostname(rootfs: Path) -> None:
    p = plan_of(rootfs, hostname=None)
    assert not of_type(p, HostnameStep)
    assert not of_type(p, DomainnameStep)


def test_capabilities_bounding_before_user_switch_and_caps_after(rootfs: Path) -> None:
    p = plan_of(rootfs)
    b, k1, u, k0, c = (index(p, BoundingStep), find(p, KeepCapsStep(True)), index(p, UserStep),
                       find(p, KeepCapsStep(False)), index(p, CapsStep))
    assert b < k1 < u < k0 < c
    assert p.steps[b] == BoundingStep(DEFAULT_CAPS)
    assert p.steps[c] == CapsStep(DEFAULT_CAPS, DEFAULT_CAPS, 0, DEFAULT_CAPS)


def test_capability_sets_are_kept_apart(rootfs: Path) -> None:
    p = plan_of(rootfs, process={"capabilities": {
        "bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE"],
        "effective": ["CAP_CHOWN"],
        "permitted": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
        "inheritable": ["CAP_SYS_ADMIN"],
        "ambient": ["CAP_SYS_ADMIN"],
    }})
    assert of_type(p, BoundingStep) == [BoundingStep((1 << 0) | (1 << 21) | (1 << 40))]
    assert of_type(p, CapsStep) == [CapsStep(1 << 0, (1 << 0) | (1 << 21), 1 << 21, 1 << 21)]


def test_no_capabilities_section_leaves_capabilities_alone(rootfs: Path) -> None:
    p = plan_of(rootfs, process={"capabilities": None})
    assert not of_type(p, BoundingStep) and not of_type(p, CapsStep) and not of_type(p, KeepCapsStep)
    assert of_type(p, UserStep) == [UserStep(0, 0, ())]


def test_user(rootfs: Path) -> None:
    p = plan_of(rootfs, process={"user": {"uid": 1000, "gid": 1001, "additionalGids": [5, 100], "umask": 0o077}})
    assert of_type(p, UserStep) == [UserStep(1000, 1001, (5, 100))]
    assert of_type(p, UmaskStep) == [UmaskStep(0o077)]


def test_default_umask(rootfs: Path) -> None:
    assert of_type(plan_of(rootfs), UmaskStep) == [UmaskStep(0o022)]


def test_too_many_additional_gids(rootfs: Path) -> None:
    with pytest.raises(ConfigError) as e:
        plan_of(rootfs, process={"user": {"uid": 0, "gid": 0, "additionalGids": list(range(65))}})
    assert e.value.path == "process.user.additionalGids"


def test_rlimits_and_no_new_privileges(rootfs: Path) -> None:
    p = plan_of(rootfs, process={"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512},
                                             {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]})
    assert of_type(p, RlimitStep) == [RlimitStep("RLIMIT_NOFILE", 512, 1024), RlimitStep("RLIMIT_CORE", 0, 0)]
    assert len(of_type(p, NoNewPrivsStep)) == 1
    # limits are set while still root (raising a hard limit needs CAP_SYS_RESOURCE)
    assert p.steps.index(of_type(p, RlimitStep)[-1]) < index(p, UserStep)


def test_new_privileges_allowed(rootfs: Path) -> None:
    assert not of_type(plan_of(rootfs, process={"noNewPrivileges": False}), NoNewPrivsStep)


def test_cwd_env_and_args_end_the_plan(rootfs: Path) -> None:
    p = plan_of(rootfs, process={"cwd": "/work", "args": ["sh", "-c", "echo hi"]})
    assert typed(p.steps[-2:-1]) == typed([ChdirStep("/work")])
    last = p.steps[-1]
    assert isinstance(last, ExecStep)
    assert last.args == ("sh", "-c", "echo hi")


@pytest.mark.parametrize(
    "uid, env, expected",
    [
        (0, ["TERM=xterm"], ["TERM=xterm", DEFAULT_PATH, "HOME=/root"]),
        (1000, ["PATH=/bin"], ["PATH=/bin", "HOME=/home/user"]),
        (0, ["HOME=/srv", "PATH=/bin"], ["HOME=/srv", "PATH=/bin"]),
        (4242, ["PATH=/bin"], ["PATH=/bin", "HOME=/"]),  # not in /etc/passwd
        (1001, ["PATH=/bin"], ["PATH=/bin", "HOME=/"]),  # in /etc/passwd with an empty home
    ],
)
def test_env_defaults(rootfs: Path, uid: int, env: list[str], expected: list[str]) -> None:
    p = plan_of(rootfs, process={"env": env, "user": {"uid": uid, "gid": uid}})
    last = p.steps[-1]
    assert isinstance(last, ExecStep)
    assert list(last.env) == expected


def test_home_without_passwd_file(rootfs: Path) -> None:
    (rootfs / "etc/passwd").unlink()
    last = plan_of(rootfs).steps[-1]
    assert isinstance(last, ExecStep) and "HOME=/" in last.env


# --- namespaces and errors ------------------------------------------------------------------------


def test_clone_flags_from_namespaces(rootfs: Path) -> None:
    p = plan_of(rootfs)
    f = NAMESPACE_FLAGS
    assert p.clone_flags == f["pid"] | f["network"] | f["ipc"] | f["uts"] | f["mount"]


def test_clone_flags_without_network(rootfs: Path) -> None:
    p = plan_of(rootfs, linux={"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]})
    f = NAMESPACE_FLAGS
    assert p.clone_flags == f["pid"] | f["mount"] | f["uts"]


def test_new_network_namespace_brings_lo_up_before_the_user_switch(rootfs: Path) -> None:
    p = plan_of(rootfs)
    assert of_type(p, plan.LoopbackUpStep) == [plan.LoopbackUpStep()]
    assert pivot_at(p) < index(p, plan.LoopbackUpStep) < index(p, UserStep)


def test_no_lo_step_in_the_host_network_namespace(rootfs: Path) -> None:
    p = plan_of(rootfs, linux={"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]})
    assert not of_type(p, plan.LoopbackUpStep)


def test_missing_rootfs(rootfs: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        plan_of(rootfs, root={"path": str(tmp_path / "nope")})
    assert e.value.path == "root.path"
    assert str(tmp_path / "nope") in str(e.value)


def test_relative_rootfs_is_taken_from_the_bundle(rootfs: Path) -> None:
    p = plan_of(rootfs, root={"path": "rootfs"})
    assert p.rootfs == str(rootfs)


def test_no_root_or_no_process(rootfs: Path) -> None:
    with pytest.raises(ConfigError) as e:
        plan_of(rootfs, root=None)
    assert e.value.path == "root"
    with pytest.raises(ConfigError) as e:
        plan_of(rootfs, process=None)
    assert e.value.path == "process"


def test_too_many_args_or_env_entries_for_the_init(rootfs: Path) -> None:
    """_clone.c holds at most AIO_MAX_STRS strings a record (argv, env) in fixed arrays:
    more must be refused here, naming the field, not overflow the init's stack."""
    limit = max_in_header("AIO_MAX_STRS")
    with pytest.raises(ConfigError) as e:
        plan_of(rootfs, process={"env": [f"V{i}=x" for i in range(limit + 1)]})
    assert e.value.path == "process.env"
    with pytest.raises(ConfigError) as e:
        plan_of(rootfs, process={"args": ["true"] * (limit + 1)})
    assert e.value.path == "process.args"


# --- the wire form -------------------------------------------------------------------------------


def decode(wire: bytes, names: Mapping[int, str]) -> list[tuple[str, tuple[int, ...], tuple[str, ...]]]:
    """The records as _clone.c reads them, checking each is exactly where the last ended."""
    out = []
    at = 0
    while at < len(wire):
        op, nint, nstr = struct.unpack_from("=III", wire, at)
        at += 12
        ints = struct.unpack_from(f"={nint}q", wire, at)
        at += 8 * nint
        strs = []
        for _ in range(nstr):
            end = wire.index(b"\0", at)
            strs.append(wire[at:end].decode())
            at = end + 1
        out.append((names[op], ints, tuple(strs)))
    assert at == len(wire)
    return out


def test_every_op_has_a_code_in_the_header() -> None:
    codes = ops_in_header()
    used = {"MOUNT", "MKDIR", "MKNOD", "SYMLINK", "UNLINK", "PIVOT_ROOT", "MOVE_ROOT", "MASK", "READONLY",
            "HOSTNAME", "DOMAINNAME", "RLIMIT", "KEEPCAPS", "USER", "CAPS_BOUNDING", "CAPS", "NO_NEW_PRIVS",
            "UMASK", "CHDIR", "WAIT_GO", "ARGV", "ENV"}
    assert used <= set(codes)
    assert len(set(codes.values())) == len(codes)


def test_encode_record_sizes(rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    p = plan_of(rootfs, cgroups=CGROUPS, hostname="box", domainname="d",
                mounts=with_mounts({"destination": "/data", "source": str(tmp_path / "src"), "options": ["rbind", "ro"]}),
                process={"user": {"uid": 1000, "gid": 1000, "additionalGids": [5, 100]}})
    codes = ops_in_header()
    wire = encode(p, codes, 40)
    expected = 0
    for s in p.steps:
        match s:
            case MountStep():
                expected += 12 + 2 * 8 + sum(len(x) + 1 for x in (s.source, s.target, s.fstype, s.data))
            case ExecStep():
                expected += 12 + sum(len(x) + 1 for x in s.args) + 12 + sum(len(x) + 1 for x in s.env)
            case UserStep():
                expected += 12 + (3 + len(s.additional_gids)) * 8
            case CapsStep():
                expected += 12 + 5 * 8
            case BoundingStep():
                expected += 12 + 2 * 8
            case _:
                pass
    records = decode(wire, {v: k for k, v in codes.items()})
    assert len(records) == len(p.steps) + 1  # ExecStep is two records
    sized = [r for r in records if r[0] in ("MOUNT", "ARGV", "ENV", "USER", "CAPS", "CAPS_BOUNDING")]
    assert sum(12 + 8 * len(ints) + sum(len(x) + 1 for x in strs) for _, ints, strs in sized) == expected
    by_op = {op: (ints, strs) for op, ints, strs in records}
    assert by_op["USER"] == ((1000, 1000, 1, 5, 100), ())
    assert by_op["CAPS_BOUNDING"] == ((40, DEFAULT_CAPS), ())
    assert by_op["CAPS"] == ((40, DEFAULT_CAPS, DEFAULT_CAPS, 0, DEFAULT_CAPS), ())
    assert by_op["RLIMIT"] == ((plan.RLIMITS["RLIMIT_NOFILE"], 1024, 1024), ("RLIMIT_NOFILE",))
    assert by_op["HOSTNAME"] == ((), ("box",))
    assert by_op["READONLY"] == ((0,), ("/",))  # the last one: the root, not bound first
    assert by_op["ARGV"] == ((), ("sh",))
    assert [op for op, _, _ in records][-2:] == ["ARGV", "ENV"]
    assert all(len(ints) <= max_in_header("AIO_MAX_INTS") for _, ints, _ in records)


def test_encode_the_largest_user_record_fits_the_init(rootfs: Path) -> None:
    p = plan_of(rootfs, process={"user": {"uid": 0, "gid": 0, "additionalGids": list(range(64))}})
    records = decode(encode(p, ops_in_header(), 40), {v: k for k, v in ops_in_header().items()})
    user = next(ints for op, ints, _ in records if op == "USER")
    assert len(user) == 67 <= max_in_header("AIO_MAX_INTS")


def test_encode_unlimited_rlimit(rootfs: Path) -> None:
    """RLIM_INFINITY is 2^64-1 in the config (as runc writes it): it must reach the init as
    the same 64 bits, not make encode() fail."""
    infinity = 2**64 - 1
    p = plan_of(rootfs, process={"rlimits": [{"type": "RLIMIT_CORE", "hard": infinity, "soft": infinity}]})
    codes = ops_in_header()
    records = decode(encode(p, codes, 40), {v: k for k, v in codes.items()})
    ints = next(ints for op, ints, _ in records if op == "RLIMIT")
    assert [x & (2**64 - 1) for x in ints] == [plan.RLIMITS["RLIMIT_CORE"], infinity, infinity]


def test_encode_refuses_nul_bytes(rootfs: Path) -> None:
    p = Plan((HostnameStep("a\0b"),), 0, str(rootfs))
    with pytest.raises(ConfigError):
        encode(p, ops_in_header(), 40)


def test_go_comes_before_the_process_settings_without_a_cgroup_mount(rootfs: Path) -> None:
    # joining and unsharing the cgroup namespace need the privileges the user switch drops
    mounts = [m for m in default_spec()["mounts"] if m["type"] != "cgroup"]
    p = plan_of(rootfs, cgroups=CGROUPS, mounts=mounts)
    go = next(i for i, s in enumerate(p.steps) if isinstance(s, WaitGoStep))
    first_process_step = next(i for i, s in enumerate(p.steps) if isinstance(s, (RlimitStep, ChdirStep, UserStep)))
    assert go < first_process_step


def test_session_keyring_is_joined_first_with_runcs_permissions(rootfs: Path) -> None:
    """A new session keyring (runc's default; none with --no-new-keyring): first of all steps,
    after the id maps in a user namespace, where "other" may search it instead of the uid."""
    spec = spec_of(rootfs)
    assert plan.SessionKeyringStep not in {type(s) for s in build(spec, bundle=str(rootfs.parent)).steps}
    p = build(spec, bundle=str(rootfs.parent), session_keyring="_ses.c1")
    assert p.steps[0] == plan.SessionKeyringStep("_ses.c1", plan.KEY_USR_SEARCH)
    namespaces = [*default_spec()["linux"]["namespaces"], {"type": "user"}]
    userns = spec_of(rootfs, linux={"namespaces": namespaces, "uidMappings": [
        {"containerID": 0, "hostID": 1000, "size": 1}], "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]})
    steps = build(userns, bundle=str(rootfs.parent), session_keyring="_ses.c1").steps
    assert steps[:2] == (WaitMapsStep(), plan.SessionKeyringStep("_ses.c1", plan.KEY_OTH_SEARCH))
    codes = ops_in_header()
    records = decode(encode(p, codes, 40), {v: k for k, v in codes.items()})
    assert records[0] == ("SESSION_KEYRING", (plan.KEY_USR_SEARCH,), ("_ses.c1",))


def test_exec_joins_the_inits_session_keyring(rootfs: Path) -> None:
    spec = spec_of(rootfs)
    assert spec.process is not None
    common: dict[str, Any] = {"linux": spec.linux, "rootfs": str(rootfs), "init_pid": 1, "cgroup1": (), "cgroup2": ""}
    assert plan.build_exec(spec.process, **common, session_keyring="_ses.c1").steps[0] == plan.SessionKeyringStep("_ses.c1")
    assert not any(isinstance(s, plan.SessionKeyringStep) for s in plan.build_exec(spec.process, **common).steps)


# --- hooks --------------------------------------------------------------------------------


HOOK_STATE = {"ociVersion": "1.0.2-dev", "id": "c", "pid": 0, "status": "creating", "bundle": "/b", "rootfs": "/r",
              "created": "t", "owner": ""}


def hooks_plan(rootfs: Path, **hooks: Any) -> Plan:
    mounts = [m for m in default_spec()["mounts"] if m["type"] != "cgroup"]
    spec = spec_of(rootfs, hooks=hooks, mounts=mounts, process={"env": ["PATH=/bin", "A=1"]})
    return build(spec, bundle=str(rootfs.parent), cgroups=CGROUPS, hook_state=HOOK_STATE)


def test_hooks_points_in_the_init_plan(rootfs: Path) -> None:
    """In the cgroups first; the parent's hooks, then createContainer, before pivot_root;
    startContainer kept for after start (the init runs it after the exec fifo)."""
    h = {"path": "/h"}
    p = hooks_plan(rootfs, prestart=[h], createContainer=[h, h], startContainer=[h])
    cc = [i for i, s in enumerate(p.steps) if isinstance(s, plan.HookStep) and s.kind == "createContainer"]
    assert index(p, WaitGoStep) < index(p, plan.HooksPointStep) < cc[0] < cc[1] < pivot_at(p)
    start = [s for s in of_type(p, plan.HookStep) if s.kind == "startContainer"]
    assert len(start) == 1 and start[0].after_start and p.steps.index(start[0]) > index(p, ExecStep)
    assert not of_type(hooks_plan(rootfs, poststart=[h], poststop=[h]), plan.HooksPointStep)
    assert of_type(hooks_plan(rootfs, createRuntime=[h]), plan.HooksPointStep) == [plan.HooksPointStep()]


def test_in_container_hook_fields(rootfs: Path) -> None:
    """args default to the path; without env the process's; the state with the init's pid
    (written by the init between head and tail) and runc's status at that point."""
    p = hooks_plan(rootfs, createContainer=[{"path": "/h", "timeout": 5}],
                   startContainer=[{"path": "/s", "args": ["s", "-x"], "env": ["B=2"]}])
    cc, sc = of_type(p, plan.HookStep)
    assert (cc.path, cc.args, cc.timeout, cc.after_start) == ("/h", ("/h",), 5, False)
    assert "A=1" in cc.env and "PATH=/bin" in cc.env
    assert (sc.args, sc.env, sc.timeout) == (("s", "-x"), ("B=2",), 0)
    assert json.loads(cc.state_head + "42" + cc.state_tail) == {**HOOK_STATE, "pid": 42, "status": "creating"}
    assert json.loads(sc.state_head + "1" + sc.state_tail) == {**HOOK_STATE, "pid": 1, "status": "created"}


def test_hook_record_on_the_wire(rootfs: Path) -> None:
    step = plan.HookStep("startContainer", "/s", ("s", "-x"), ("B=2",), 7, "{", "}", after_start=True)
    codes = ops_in_header()
    wire = plan.encode(Plan((step,), 0, str(rootfs)), codes, 40)
    op, nint, nstr = struct.unpack_from("=III", wire)
    assert (op, nint, nstr) == (codes["HOOK"], 3, 7)
    assert struct.unpack_from("=3Q", wire, 12) == (1, 7, 2)
    assert wire[36:].split(b"\0")[:-1] == [b"startContainer", b"/s", b"{", b"}", b"s", b"-x", b"B=2"]


def test_too_many_start_container_hooks(rootfs: Path) -> None:
    with pytest.raises(ConfigError, match="hooks.startContainer"):
        hooks_plan(rootfs, startContainer=[{"path": "/h"}] * (max_in_header("AIO_MAX_HOOKS") + 1))
