"""What a container sees from inside, on the real kernel: each mount kind, masked and
read-only paths, the root, hostname, cwd, env, user, capabilities, limits, devices,
namespaces, cgroups, open fds and signal dispositions.

Each test runs one busybox container that prints what it sees, checks that output, and
checks that nothing was left behind (state, cgroups, processes, host mounts). Writes go
to a tmpfs or to a per-test copy of the rootfs: the session's rootfs stays untouched.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    BundleFactory,
    assert_no_leftovers,
    cgroups_path_of,
    config_of,
    copy_rootfs,
    mounts_under,
    run,
    sh,
    status_fields,
)

from aioruntime import ConfigError, SpawnError
from aioruntime.container import PIPE, Container
from aioruntime.spec import default_spec
from tools.cgroup_tree import CgroupMount, cgroup_dirs, cgroup_mounts, remove_tree

NAMESPACES = ("pid", "net", "ipc", "uts", "mnt")
DEFAULT_CAPS = (1 << 5) | (1 << 10) | (1 << 29)  # CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE


# --- helpers ----------------------------------------------------------------------------


def with_mounts(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The default spec's mounts, then a tmpfs on /run (an existing directory of the rootfs,
    so mount points made beneath it land in the tmpfs), then ``extra``."""
    mounts: list[dict[str, Any]] = default_spec()["mounts"]
    run = {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=1m"]}
    return mounts + [run, *extra]


def mount_line(mounts: str, point: str) -> list[str]:
    """The last /proc/mounts line for mount point ``point``, split: source, point, type, options."""
    found = [line.split() for line in mounts.splitlines() if line.split()[1:2] == [point]]
    assert found, f"{point} is not a mount point:\n{mounts}"
    return found[-1]


def host_ns(name: str) -> str:
    return os.readlink(f"/proc/self/ns/{name}")


def hierarchy_line(proc_cgroup: str, m: CgroupMount) -> str:
    """The path /proc/PID/cgroup gives for the hierarchy mounted at ``m``."""
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if m.fstype == "cgroup2" and controllers == "":
            return path
        if m.fstype == "cgroup" and controllers and set(controllers.split(",")) <= m.options:
            return path
    raise AssertionError(f"no line for {m.path} in:\n{proc_cgroup}")


@pytest.fixture
def host_mount(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted on the host at tmp_path/hostmnt (made shared), unmounted at the end."""
    point = tmp_path / "hostmnt"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "aioruntime-test", str(point)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(point)], check=True)
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


# --- each mount kind ----------------------------------------------------------------------


async def test_proc_shows_the_container_pid_namespace(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(sh("echo pid=$$; tr '\\0\\n' '  ' < /proc/1/cmdline; echo; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '; "
                  "echo; cat /proc/mounts"))
    out = await run(state_root, cid, b)
    lines = out.splitlines()
    assert lines[0] == "pid=1"
    assert lines[1].startswith("sh -c exec 2>&1")  # pid 1 is the container's process
    pids = [int(x) for x in lines[2].split()]
    assert pids[0] == 1 and len(pids) <= 5, f"the container's /proc shows host processes: {pids}"
    assert mount_line(out, "/proc")[2] == "proc"


async def test_init_is_pid_1_in_its_namespace(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    c = Container(cid, bundle(["true"]), root=state_root, stdout=PIPE)
    await c.create()
    try:
        assert c.pid is not None
        status = Path(f"/proc/{c.pid}/status").read_text()
        assert status_fields(status)["NSpid"].split() == [str(c.pid), "1"]
        await c.start()
        assert await c.wait() == 0
    finally:
        await c.delete(force=True)


async def test_sysfs_is_read_only_and_shows_the_container_network(
    state_root: Path, cid: str, bundle: BundleFactory
) -> None:
    b = bundle(sh("cat /proc/mounts; echo ---; ls /sys/class/net; echo ---; mkdir /sys/kernel/aioruntime-x"))
    out = await run(state_root, cid, b, code=1)
    mounts, nets, err = out.split("---\n")
    src, _, fstype, options = mount_line(mounts, "/sys")[:4]
    assert fstype == "sysfs"
    assert options.split(",")[0] == "ro"
    assert {"nosuid", "nodev", "noexec"} <= set(options.split(","))
    assert nets.split() == ["lo"]  # a new network namespace: only its loopback
    assert "Read-only file system" in err


async def test_tmpfs_size_and_mode(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    scratch = {"destination": "/run/t", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "noexec", "size=512k", "mode=1750"]}
    b = bundle(sh("cat /proc/mounts; echo ---; stat -c '%a' /run/t; echo hi > /run/t/f && cat /run/t/f"),
               mounts=with_mounts(scratch))
    out = await run(state_root, cid, b)
    mounts, rest = out.split("---\n")
    _, _, fstype, options = mount_line(mounts, "/run/t")[:4]
    assert fstype == "tmpfs"
    opts = options.split(",")
    assert {"rw", "nosuid", "noexec", "size=512k", "mode=1750"} <= set(opts)
    assert "nodev" not in opts
    assert rest.split() == ["1750", "hi"]


async def test_devpts_is_a_new_instance(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(sh("cat /proc/mounts; echo ---; ls /dev/pts; stat -c '%d %t:%T %a' /dev/pts /dev/pts/ptmx; "
                  "readlink /dev/ptmx"))
    out = await run(state_root, cid, b)
    mounts, rest = out.split("---\n")
    _, _, fstype, options = mount_line(mounts, "/dev/pts")[:4]
    assert fstype == "devpts"
    assert {"nosuid", "noexec", "gid=5", "mode=620", "ptmxmode=666"} <= set(options.split(","))
    listing, pts, ptmx, link = rest.splitlines()
    assert listing.split() == ["ptmx"]  # none of the host's terminals
    assert int(pts.split()[0]) != os.stat("/dev/pts").st_dev  # its own superblock
    assert ptmx.split()[1:] == ["5:2", "666"]
    assert link == "pts/ptmx"


async def test_mqueue(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(sh("cat /proc/mounts; echo ---; ls -A /dev/mqueue | wc -l"))
    out = await run(state_root, cid, b)
    mounts, rest = out.split("---\n")
    _, _, fstype, options = mount_line(mounts, "/dev/mqueue")[:4]
    assert fstype == "mqueue"
    assert {"rw", "nosuid", "nodev", "noexec"} <= set(options.split(","))
    assert rest.strip() == "0"


async def test_cgroup_mount_lists_the_hierarchies_read_only(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(sh("ls /sys/fs/cgroup; echo ---; cat /proc/mounts; echo ---; cat /sys/fs/cgroup/pids/cgroup.procs; "
                  "echo ---; mkdir /sys/fs/cgroup/pids/x; mkdir /sys/fs/cgroup/x"))
    out = await run(state_root, cid, b, code=1)
    names, mounts, procs, err = out.split("---\n")
    hierarchies = {m.path.name: m for m in cgroup_mounts() if m.path.parent == Path("/sys/fs/cgroup")}
    assert sorted(names.split()) == sorted(hierarchies)
    top = mount_line(mounts, "/sys/fs/cgroup")
    assert top[2] == "tmpfs" and top[3].split(",")[0] == "ro"
    for name, m in hierarchies.items():
        line = mount_line(mounts, f"/sys/fs/cgroup/{name}")
        assert line[2] == m.fstype
        assert line[3].split(",")[0] == "ro", line
    # without a cgroup namespace the container's own cgroup is what each directory shows
    assert "1" in procs.split()
    assert err.count("Read-only file system") == 2, err


async def test_cgroup_mount_in_a_cgroup_namespace(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    namespaces = default_spec()["linux"]["namespaces"] + [{"type": "cgroup"}]
    b = bundle(sh("cat /proc/self/cgroup; echo ---; cat /sys/fs/cgroup/pids/cgroup.procs; echo ---; cat /proc/mounts"),
               linux={"namespaces": namespaces})
    out = await run(state_root, cid, b)
    cgroups, procs, mounts = out.split("---\n")
    assert host_ns("cgroup") != ""  # the host has one to compare with
    for m in cgroup_mounts():
        if m.path.parent == Path("/sys/fs/cgroup"):
            assert hierarchy_line(cgroups, m) == "/", f"{m.path}: {cgroups}"
            assert mount_line(mounts, f"/sys/fs/cgroup/{m.path.name}")[3].split(",")[0] == "ro"
    assert "1" in procs.split()


async def test_bind_mounts_of_a_directory_read_only_and_of_a_file(
    state_root: Path, cid: str, bundle: BundleFactory, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("from the host\n")
    data = tmp_path / "data.txt"
    data.write_text("file on the host\n")
    b = bundle(
        sh("cat /run/ro/hello; touch /run/ro/new; echo ---; cat /run/data.txt; echo appended >> /run/data.txt; "
           "echo ---; cat /proc/mounts"),
        mounts=with_mounts(
            {"destination": "/run/ro", "type": "bind", "source": str(src), "options": ["rbind", "ro", "nosuid"]},
            {"destination": "/run/data.txt", "type": "none", "source": str(data), "options": ["bind"]},
        ),
    )
    out = await run(state_root, cid, b, watch=[tmp_path])
    ro, rw, mounts = out.split("---\n")
    assert ro.startswith("from the host\n")
    assert "Read-only file system" in ro
    assert not (src / "new").exists()
    assert rw == "file on the host\n"
    assert data.read_text() == "file on the host\nappended\n"  # the same file
    assert mount_line(mounts, "/run/ro")[3].split(",")[0] == "ro"
    assert mount_line(mounts, "/run/data.txt")[3].split(",")[0] == "rw"
    # the host's directory stays writable
    (src / "still-writable").write_text("")


async def test_rbind_takes_submounts_and_bind_does_not(
    state_root: Path, cid: str, bundle: BundleFactory, tmp_path: Path, host_mount: Path
) -> None:
    (host_mount / "marker").write_text("submount\n")
    b = bundle(
        sh("cat /run/r/hostmnt/marker; echo ---; ls -A /run/b/hostmnt | wc -l"),
        mounts=with_mounts(
            {"destination": "/run/r", "source": str(tmp_path), "options": ["rbind"]},
            {"destination": "/run/b", "source": str(tmp_path), "options": ["bind"]},
        ),
    )
    out = await run(state_root, cid, b)
    rbind, bind = out.split("---\n")
    assert rbind == "submount\n"
    assert bind.strip() == "0"
    assert mounts_under(tmp_path) == [str(host_mount)]  # only the fixture's own mount


@pytest.mark.parametrize("option, tag", [("rshared", "shared:"), ("rprivate", None), ("runbindable", "unbindable")])
async def test_propagation_option(state_root: Path, cid: str, bundle: BundleFactory, option: str, tag: str | None) -> None:
    b = bundle(sh("cat /proc/self/mountinfo"),
               mounts=with_mounts({"destination": "/run/p", "type": "tmpfs", "source": "tmpfs", "options": [option]}))
    out = await run(state_root, cid, b)
    line = next(line.split(" - ")[0].split() for line in out.splitlines() if line.split()[4:5] == ["/run/p"])
    optional = line[6:]
    if tag is None:
        assert optional == [], line
    else:
        assert any(o.startswith(tag) for o in optional), line


async def test_rslave_bind_receives_host_mounts(
    state_root: Path, cid: str, bundle: BundleFactory, host_mount: Path
) -> None:
    b = bundle(sh("cat /proc/self/mountinfo"),
               mounts=with_mounts({"destination": "/run/s", "source": str(host_mount), "options": ["rbind", "rslave"]}))
    out = await run(state_root, cid, b)
    line = next(line.split(" - ")[0].split() for line in out.splitlines() if line.split()[4:5] == ["/run/s"])
    assert any(o.startswith("master:") for o in line[6:]), line


async def test_mount_destination_symlink_cannot_escape_the_rootfs(
    state_root: Path, cid: str, bundle: BundleFactory, rootfs: Path, tmp_path: Path
) -> None:
    """A symlink in the rootfs is resolved inside it (as runc's securejoin does): a mount
    whose destination goes through ``/escape -> <host dir>`` must not create or mount
    anything in the host's directory."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = copy_rootfs(rootfs, tmp_path / "rootfs")
    (root / "escape").symlink_to(outside)
    b = bundle(sh("cat /proc/mounts"), root={"path": str(root)},
               mounts=with_mounts({"destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs"}))
    try:
        await run(state_root, cid, b, watch=[tmp_path])
    except (SpawnError, ConfigError):
        pass  # refusing is fine too; writing outside the rootfs is not
    assert list(outside.iterdir()) == [], "a mount point was made outside the rootfs"


# --- masked and read-only paths, the root ------------------------------------------------------


async def test_masked_paths(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    masked = default_spec()["linux"]["maskedPaths"] + ["/home"]
    files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
    assert files, "no maskable /proc file on this kernel"
    b = bundle(sh(f"for f in {' '.join(files)}; do wc -c < $f; done; echo ---; ls -A /sys/firmware /home; echo ---; "
                  "cat /proc/mounts; echo ---; touch /sys/firmware/x /home/x"),
               linux={"maskedPaths": masked})
    out = await run(state_root, cid, b, code=1)
    sizes, listing, mounts, err = out.split("---\n")
    assert sizes.split() == ["0"] * len(files)
    assert listing.split() == ["/home:", "/sys/firmware:"] or listing.split() == ["/sys/firmware:", "/home:"]
    for d in ("/sys/firmware", "/home"):
        src, _, fstype, options = mount_line(mounts, d)[:4]
        assert fstype == "tmpfs" and options.split(",")[0] == "ro", (d, options)
    assert err.count("Read-only file system") == 2, err


async def test_readonly_paths(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(sh("cat /proc/mounts; echo ---; echo x > /proc/sys/kernel/domainname; cat /proc/sys/kernel/domainname"))
    out = await run(state_root, cid, b)
    mounts, rest = out.split("---\n")
    for p in default_spec()["linux"]["readonlyPaths"]:
        if os.path.exists(p):
            assert mount_line(mounts, p)[3].split(",")[0] == "ro", p
    assert "Read-only file system" in rest
    assert rest.splitlines()[-1] != "x"


async def test_readonly_path_of_the_rootfs(state_root: Path, cid: str, bundle: BundleFactory, rootfs: Path,
                                           tmp_path: Path) -> None:
    root = copy_rootfs(rootfs, tmp_path / "rootfs")
    readonly = default_spec()["linux"]["readonlyPaths"] + ["/etc"]
    b = bundle(sh("touch /etc/x; touch /y && echo root-writable"), root={"path": str(root), "readonly": False},
               linux={"readonlyPaths": readonly})
    out = await run(state_root, cid, b)
    assert "Read-only file system" in out
    assert out.splitlines()[-1] == "root-writable"
    assert not (root / "etc/x").exists()
    assert (root / "y").exists()


async def test_readonly_root(state_root: Path, cid: str, bundle: BundleFactory, rootfs: Path) -> None:
    b = bundle(sh("cat /proc/mounts; echo ---; touch /aioruntime-x"), root={"readonly": True})
    out = await run(state_root, cid, b, code=1)
    mounts, err = out.split("---\n")
    assert mounts.splitlines()[0].split()[1] == "/"
    assert mounts.splitlines()[0].split()[3].split(",")[0] == "ro"
    assert "Read-only file system" in err
    assert not (rootfs / "aioruntime-x").exists()


async def test_writable_root(state_root: Path, cid: str, bundle: BundleFactory, rootfs: Path, tmp_path: Path) -> None:
    root = copy_rootfs(rootfs, tmp_path / "rootfs")
    b = bundle(sh("echo written > /new && cat /new"), root={"path": str(root), "readonly": False})
    out = await run(state_root, cid, b)
    assert out == "written\n"
    assert (root / "new").read_text() == "written\n"


async def test_no_pivot(state_root: Path, cid: str, bundle: BundleFactory, rootfs: Path, tmp_path: Path) -> None:
    b = bundle(sh(f"ls /; echo ---; ls {tmp_path}; echo ---; cat /proc/self/mountinfo"))
    out = await run(state_root, cid, b, no_pivot=True, watch=[tmp_path])
    listing, hidden, mountinfo = out.split("---\n")
    assert listing.split() == sorted(p.name for p in rootfs.iterdir() if not p.name.startswith("."))
    assert "No such file or directory" in hidden  # the host's tree is out of reach
    assert any(line.split()[4] == "/" for line in mountinfo.splitlines())


# --- identity and process ----------------------------------------------------------------------


async def test_hostname_and_domainname(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    before = socket.gethostname()
    b = bundle(sh("hostname; cat /proc/sys/kernel/domainname"), hostname="box-1", domainname="example.test")
    out = await run(state_root, cid, b)
    assert out.split() == ["box-1", "example.test"]
    assert socket.gethostname() == before


async def test_cwd(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    out = await run(state_root, cid, bundle(["pwd"], process={"cwd": "/tmp"}))
    assert out == "/tmp\n"


async def test_cwd_the_user_cannot_enter(state_root: Path, cid: str, bundle: BundleFactory, rootfs: Path,
                                         tmp_path: Path) -> None:
    """As runc: the init enters the cwd while still root, then switches user, so a cwd only
    root may enter (here /root, 0700) works; the process just cannot list it."""
    root = copy_rootfs(rootfs, tmp_path / "rootfs")
    b = bundle(sh("pwd; ls ."), root={"path": str(root)}, process={"cwd": "/root", "user": {"uid": 1000, "gid": 1000}})
    out = await run(state_root, cid, b, code=1)
    assert out.splitlines()[0] == "/root"
    assert "Permission denied" in out


async def test_env_as_configured_plus_home(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(["env"], process={"env": ["PATH=/bin:/sbin", "FOO=bar baz", "EMPTY="]})
    out = await run(state_root, cid, b)
    assert sorted(out.splitlines()) == ["EMPTY=", "FOO=bar baz", "HOME=/root", "PATH=/bin:/sbin"]


async def test_env_defaults_for_a_user(
    state_root: Path, cid: str, bundle: BundleFactory, rootfs: Path, tmp_path: Path
) -> None:
    root = copy_rootfs(rootfs, tmp_path / "rootfs")
    b = bundle(["env"], root={"path": str(root)}, process={"env": ["TERM=xterm"], "user": {"uid": 1000, "gid": 1000}})
    out = await run(state_root, cid, b)
    assert sorted(out.splitlines()) == [
        "HOME=/home/user", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm",
    ]


async def test_explicit_home_is_kept(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    out = await run(state_root, cid, bundle(["env"], process={"env": ["HOME=/srv", "PATH=/bin"]}))
    assert sorted(out.splitlines()) == ["HOME=/srv", "PATH=/bin"]


async def test_user_and_groups(state_root: Path, cid: str, bundle: BundleFactory, rootfs: Path, tmp_path: Path) -> None:
    root = copy_rootfs(rootfs, tmp_path / "rootfs")
    b = bundle(root={"path": str(root)}, args=sh("id -u; id -g; id -un; grep -E '^(Uid|Gid|Groups):' /proc/self/status; umask; "
                  "touch /tmp/x 2>/dev/null || echo no-write"),
               process={"user": {"uid": 1000, "gid": 1000, "additionalGids": [5, 100], "umask": 0o027},
                        "cwd": "/home/user"})
    out = await run(state_root, cid, b)
    lines = out.splitlines()
    assert lines[:3] == ["1000", "1000", "user"]
    fields = status_fields("\n".join(lines[3:6]))
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["Gid"].split() == ["1000"] * 4
    assert sorted(fields["Groups"].split()) == ["100", "5"]
    assert lines[6] == "0027"
    assert lines[7] == "no-write"  # the root is read-only in the default spec anyway


async def test_root_user_has_no_supplementary_groups(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    out = await run(state_root, cid, bundle(["cat", "/proc/self/status"]))
    fields = status_fields(out)
    assert fields["Uid"].split() == ["0"] * 4
    assert fields["Groups"] == ""  # not the groups of the process that made the container


async def test_default_capabilities(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    out = await run(state_root, cid, bundle(["cat", "/proc/self/status"]))
    fields = status_fields(out)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(fields[key], 16) == DEFAULT_CAPS, (key, fields[key])
    assert int(fields["CapInh"], 16) == 0
    # ambient asks for caps outside the inheritable set: the kernel refuses, runc skips them
    assert int(fields["CapAmb"], 16) == 0


async def test_ambient_capabilities_for_a_user(
    state_root: Path, cid: str, bundle: BundleFactory, rootfs: Path, tmp_path: Path
) -> None:
    root = copy_rootfs(rootfs, tmp_path / "rootfs")
    net_bind = ["CAP_NET_BIND_SERVICE"]
    caps = {k: net_bind for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    b = bundle(["cat", "/proc/self/status"], root={"path": str(root)},
               process={"capabilities": caps, "user": {"uid": 1000, "gid": 1000}})
    fields = status_fields(await run(state_root, cid, b))
    for key in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
        assert int(fields[key], 16) == 1 << 10, (key, fields[key])


@pytest.mark.parametrize("nnp", [True, False])
async def test_no_new_privileges(state_root: Path, cid: str, bundle: BundleFactory, nnp: bool) -> None:
    out = await run(state_root, cid, bundle(["cat", "/proc/self/status"], process={"noNewPrivileges": nnp}))
    assert status_fields(out)["NoNewPrivs"] == str(int(nnp))


async def test_rlimits(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    rlimits = [{"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 512}, {"type": "RLIMIT_NPROC", "hard": 300, "soft": 200}]
    out = await run(state_root, cid, bundle(sh("ulimit -n; cat /proc/self/limits"), process={"rlimits": rlimits}))
    assert out.splitlines()[0] == "512"
    assert re.search(r"^Max open files\s+512\s+2048\s", out, re.M), out
    assert re.search(r"^Max processes\s+200\s+300\s", out, re.M), out


async def test_unlimited_rlimit(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    infinity = 2**64 - 1  # RLIM_INFINITY, as runc and the spec write "unlimited"
    rlimits = [{"type": "RLIMIT_CORE", "hard": infinity, "soft": infinity}]
    out = await run(state_root, cid, bundle(["cat", "/proc/self/limits"], process={"rlimits": rlimits}))
    assert re.search(r"^Max core file size\s+unlimited\s+unlimited\s", out, re.M), out


# --- devices -------------------------------------------------------------------------------------


async def test_default_devices_and_symlinks(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    devices = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8", "urandom": "1:9", "tty": "5:0"}
    links = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
    script = (" ".join(f"stat -c '%n %F %t:%T %a %u:%g' /dev/{d};" for d in devices)
              + " ".join(f"echo /dev/{name} $(readlink /dev/{name});" for name in links)
              + " echo data > /dev/null && head -c 4 /dev/zero | wc -c")
    out = await run(state_root, cid, bundle(sh(script)))
    lines = out.splitlines()
    for line, (name, number) in zip(lines, devices.items()):
        assert line == f"/dev/{name} character special file {number} 666 0:0", line
    for line, (name, target) in zip(lines[len(devices):], links.items()):
        assert line == f"/dev/{name} {target}"
    assert lines[-1] == "4"


async def test_config_device(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(sh("stat -c '%n %F %t:%T %a %u:%g' /dev/mine /dev/sub/fifo"), linux={"devices": [
        {"path": "/dev/mine", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 1000, "gid": 5},
        {"path": "/dev/sub/fifo", "type": "p", "fileMode": 0o600},
    ]})
    out = await run(state_root, cid, b)
    assert out.splitlines() == ["/dev/mine character special file 1:3 640 1000:5", "/dev/sub/fifo fifo 0:0 600 0:0"]


# --- namespaces and cgroups ------------------------------------------------------------------------


async def test_namespaces_are_new(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(sh(" ".join(f"readlink /proc/self/ns/{n};" for n in NAMESPACES + ("cgroup",))))
    out = await run(state_root, cid, b)
    inside = dict(zip(NAMESPACES + ("cgroup",), out.split()))
    for name in NAMESPACES:
        assert inside[name].startswith(f"{name}:[")
        assert inside[name] != host_ns(name), name
    assert inside["cgroup"] == host_ns("cgroup")  # the default spec asks for no cgroup namespace


async def test_without_a_network_namespace_the_host_network_is_shared(
    state_root: Path, cid: str, bundle: BundleFactory
) -> None:
    namespaces = [ns for ns in default_spec()["linux"]["namespaces"] if ns["type"] != "network"]
    b = bundle(sh(" ".join(f"readlink /proc/self/ns/{n};" for n in NAMESPACES)), linux={"namespaces": namespaces})
    out = await run(state_root, cid, b)
    inside = dict(zip(NAMESPACES, out.split()))
    assert inside["net"] == host_ns("net")
    for name in ("pid", "ipc", "uts", "mnt"):
        assert inside[name] != host_ns(name), name


async def test_cgroup_membership(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(["cat", "/proc/self/cgroup"])
    path = cgroups_path_of(b)
    assert path.startswith("/")
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    pid = c.pid
    try:
        # on the host: the init is in the container's cgroup of every mounted hierarchy
        for d in cgroup_dirs(path):
            assert str(c.pid) in (d / "cgroup.procs").read_text().split(), d
        await c.start()
        assert c.stdout is not None
        out = (await c.stdout.read()).decode()
        assert await c.wait() == 0
    finally:
        await c.delete(force=True)
    for m in cgroup_mounts():
        assert hierarchy_line(out, m) == path, m.path
    assert_no_leftovers(state_root, cid, path, pid=pid)


async def test_default_cgroups_path_is_the_id(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    b = bundle(["cat", "/proc/self/cgroup"], cgroups_path=None)
    assert "cgroupsPath" not in config_of(b)["linux"]
    try:
        out = await run(state_root, cid, b)
        for m in cgroup_mounts():
            assert hierarchy_line(out, m) == f"/{cid}", m.path
        assert_no_leftovers(state_root, cid, f"/{cid}")  # removed on delete
    finally:
        remove_tree(cid)  # only if delete did not


async def test_relative_cgroups_path_is_under_our_own_cgroup(
    state_root: Path, cid: str, bundle: BundleFactory, cgroup_parent: str
) -> None:
    rel = f"{cgroup_parent}/{cid}"
    own = {m.path: hierarchy_line(Path("/proc/self/cgroup").read_text(), m) for m in cgroup_mounts()}
    b = bundle(["cat", "/proc/self/cgroup"], cgroups_path=rel)
    try:
        out = await run(state_root, cid, b)
        for m in cgroup_mounts():
            assert hierarchy_line(out, m) == os.path.join(own[m.path], rel), m.path
    finally:
        # Where our own cgroup is not the root (memory: a system cgroup), remove the two
        # uniquely named directories, should delete have left them; the session removes
        # /<cgroup_parent> elsewhere.
        for m in cgroup_mounts():
            if own[m.path] != "/":
                base = m.path / os.path.relpath(own[m.path], m.root)
                for d in (base / rel, base / cgroup_parent):
                    if d.is_dir():
                        d.rmdir()


# --- fds and signals --------------------------------------------------------------------------------


async def test_only_stdio_fds_are_open(state_root: Path, cid: str, bundle: BundleFactory, tmp_path: Path) -> None:
    extra = [os.open(tmp_path, os.O_RDONLY), *os.pipe()]
    for fd in extra:
        os.set_inheritable(fd, True)  # what a careless program leaves open
    try:
        out = await run(state_root, cid, bundle(["ls", "/proc/self/fd"]))
    finally:
        for fd in extra:
            os.close(fd)
    assert sorted(int(fd) for fd in out.split()) == [0, 1, 2, 3], out  # 3: the listing's own directory


async def test_signal_dispositions_and_mask_are_reset(state_root: Path, cid: str, bundle: BundleFactory) -> None:
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # as CPython sets it
    b = bundle(["cat", "/proc/self/status"])
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        c = Container(cid, b, root=state_root, stdout=PIPE)
        await c.create()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    try:
        await c.start()
        assert c.stdout is not None
        out = (await c.stdout.read()).decode()
        assert await c.wait() == 0
    finally:
        await c.delete(force=True)
    fields = status_fields(out)
    assert int(fields["SigIgn"], 16) == 0
    assert int(fields["SigBlk"], 16) == 0
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))
