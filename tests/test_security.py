"""Security fields of the config, and escape attempts from inside real containers.

Each escape test runs a default-config container (runc's default spec: three
capabilities, no_new_privileges, masked and read-only /proc paths) that tries to get out
and reports what happened; the test checks the attempt failed and the host is unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of, copy_rootfs, run, sh, started, status_fields

import aioruntime
from aioruntime import ConfigError
from aioruntime.container import PIPE, Container
from aioruntime.seccomp import compile_profile

ALLOW = "SCMP_ACT_ALLOW"


def deny(*names: str, errno: int = 1, args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A profile allowing everything but ``names`` (EPERM unless ``errno`` says otherwise)."""
    rule: dict[str, Any] = {"names": list(names), "action": "SCMP_ACT_ERRNO", "errnoRet": errno}
    if args:
        rule["args"] = args
    return {"defaultAction": ALLOW, "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [rule]}


# --- seccomp ------------------------------------------------------------------------------


@pytest.mark.parametrize("no_new_privileges", [True, False], ids=["late-with-nnp", "early-without-nnp"])
async def test_seccomp_denies_a_syscall_with_its_errno(
    bundle: BundleFactory, state_root: Path, cid: str, no_new_privileges: bool
) -> None:
    b = bundle(
        sh("mkdir /tmp/x; echo mkdir=$?; ls -d /tmp"),
        process={"noNewPrivileges": no_new_privileges},
        linux={"seccomp": deny("mkdir", "mkdirat")},
    )
    out = await run(state_root, cid, b)
    assert "Operation not permitted" in out and "mkdir=1" in out
    assert "/tmp" in out  # everything else still works


async def test_seccomp_errno_value_is_the_configured_one(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(sh("mkdir /tmp/x"), linux={"seccomp": deny("mkdir", "mkdirat", errno=13)})  # EACCES
    out = await run(state_root, cid, b, code=1)
    assert "Permission denied" in out


async def test_seccomp_argument_comparison(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    # kill(pid, SIGUSR1) refused, kill(pid, 0) allowed: the rule looks at argument 1
    profile = deny("kill", args=[{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}])
    b = bundle(sh("kill -0 $$; echo zero=$?; kill -USR1 $$; echo usr1=$?"), linux={"seccomp": profile})
    out = await run(state_root, cid, b)
    assert "zero=0" in out and "usr1=1" in out


async def test_seccomp_unknown_syscall_names_are_skipped(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(sh("mkdir /tmp/x; echo mkdir=$?"), linux={"seccomp": deny("no_such_syscall_at_all", "mkdir", "mkdirat")})
    assert "mkdir=1" in await run(state_root, cid, b)


async def test_seccomp_kill_process_action(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    profile = {"defaultAction": ALLOW, "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    # busybox's ash calls getppid() for $PPID at start-up: the shell dies of SIGSYS
    b = bundle(["sh", "-c", "echo unreachable"], linux={"seccomp": profile})
    c = Container(cid, b, root=state_root)
    assert await c.run() == -31  # SIGSYS
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


@pytest.mark.parametrize(
    ("profile", "path", "fragment"),
    [
        ({}, "linux.seccomp.defaultAction", "needs a defaultAction"),
        ({"defaultAction": "SCMP_ACT_MAYBE"}, "linux.seccomp.defaultAction", "unknown seccomp action"),
        ({"defaultAction": ALLOW, "architectures": ["SCMP_ARCH_Z80"]}, "linux.seccomp.architectures[0]", "unknown architecture"),
        ({"defaultAction": ALLOW, "flags": ["SECCOMP_FILTER_FLAG_NOPE"]}, "linux.seccomp.flags[0]", "unknown seccomp flag"),
        ({"defaultAction": ALLOW, "syscalls": [{"names": ["read"], "action": "NOPE"}]}, "linux.seccomp.syscalls[0].action", "unknown"),
        (
            {"defaultAction": ALLOW, "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                   "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
            "linux.seccomp.syscalls[0].args[0].index", "0-5",
        ),
        (
            {"defaultAction": ALLOW, "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                   "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]},
            "linux.seccomp.syscalls[0].args[0].op", "unknown comparison",
        ),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "linux.seccomp.defaultAction", "listener"),
    ],
)
def test_invalid_profiles_name_the_field(profile: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        compile_profile(profile)
    assert e.value.path == path
    assert fragment in str(e.value)


def test_a_profile_compiles_to_bpf() -> None:
    f = compile_profile({**deny("mkdir"), "flags": ["SECCOMP_FILTER_FLAG_LOG"]})
    assert f.program and len(f.program) % 8 == 0
    assert f.flags == 2


async def test_invalid_profile_leaves_nothing(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"], linux={"seccomp": {"defaultAction": "SCMP_ACT_MAYBE"}})
    with pytest.raises(ConfigError):
        await Container(cid, b, root=state_root).create()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


# --- sysctl, oom_score_adj, personality, rlimits -------------------------------------------


async def test_namespaced_sysctls_are_set_inside_only(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    host = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    b = bundle(
        sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni"),
        linux={"sysctl": {"net.ipv4.ip_forward": "1" if host.strip() == "0" else "0", "kernel.shmmni": "1234"}},
    )
    out = await run(state_root, cid, b)
    assert out.split() == ["1" if host.strip() == "0" else "0", "1234"]
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host


@pytest.mark.parametrize(
    ("sysctl", "namespaces", "fragment"),
    [
        ({"kernel.panic": "1"}, None, "not a namespaced sysctl"),
        ({"net.ipv4.ip_forward": "1"}, [{"type": "pid"}, {"type": "mount"}], "own network namespace"),
        ({"kernel.shmmax": "1"}, [{"type": "pid"}, {"type": "mount"}], "own ipc namespace"),
    ],
)
async def test_host_sysctls_are_refused(
    bundle: BundleFactory, state_root: Path, cid: str, sysctl: dict[str, str], namespaces: list[dict[str, str]] | None,
    fragment: str,
) -> None:
    linux: dict[str, Any] = {"sysctl": sysctl}
    overrides: dict[str, Any] = {}
    if namespaces is not None:
        linux["namespaces"] = namespaces
        overrides["hostname"] = None
    b = bundle(["true"], linux=linux, **overrides)
    with pytest.raises(ConfigError) as e:
        await Container(cid, b, root=state_root).create()
    assert e.value.path.startswith("linux.sysctl[") and fragment in str(e.value)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


async def test_oom_score_adj(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(sh("cat /proc/self/oom_score_adj"), process={"oomScoreAdj": 500})
    assert (await run(state_root, cid, b)).strip() == "500"


async def test_personality_linux32(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["uname", "-m"], linux={"personality": {"domain": "LINUX32"}})
    assert (await run(state_root, cid, b)).strip() in ("i686", "i386")


async def test_rlimit_above_the_hard_limit_is_a_clear_error(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    caps = int(status_fields(Path("/proc/self/status").read_text())["CapEff"], 16)
    if caps >> 24 & 1:
        pytest.skip("this process has CAP_SYS_RESOURCE: it may raise hard limits")
    b = bundle(["true"], process={"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": hard + 1}]})
    with pytest.raises(ConfigError) as e:
        await Container(cid, b, root=state_root).create()
    assert e.value.path == "process.rlimits[0].hard" and "CAP_SYS_RESOURCE" in str(e.value)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


# --- escape attempts from a default container ------------------------------------------------


async def test_proc_writes_are_refused(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    before = Path("/proc/sys/kernel/domainname").read_text()
    out = await run(state_root, cid, bundle(sh(
        "echo h > /proc/sysrq-trigger; echo sysrq=$?;"
        " echo evil > /proc/sys/kernel/domainname; echo domain=$?;"
        " echo 1 > /proc/sys/vm/drop_caches; echo drop=$?;"
        " head -c 16 /proc/kcore | wc -c; head -c 1 /proc/keys | wc -c"
    )))
    assert "sysrq=1" in out and "domain=1" in out and "drop=1" in out
    assert out.split()[-2:] == ["0", "0"]  # masked: nothing to read (kcore may not exist at all)
    assert Path("/proc/sys/kernel/domainname").read_text() == before


async def test_mount_umount_and_pivot_root_are_refused(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    out = await run(state_root, cid, bundle(sh(
        "mount -t tmpfs none /tmp; echo mount=$?;"
        " umount /proc; echo umount=$?;"
        " mkdir -p /tmp/new/old; pivot_root /tmp/new /tmp/new/old; echo pivot=$?;"
        " mount --bind / /mnt; echo bind=$?"
    )))
    for op in ("mount", "umount", "pivot", "bind"):
        assert f"{op}=1" in out or f"{op}=255" in out, out


async def test_host_disks_cannot_be_made_or_opened(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    disk = next((p for p in ("/dev/vda", "/dev/sda", "/dev/nvme0n1") if os.path.exists(p)), None)
    major, minor = (os.major(os.stat(disk).st_rdev), os.minor(os.stat(disk).st_rdev)) if disk else (8, 0)
    out = await run(state_root, cid, bundle(sh(
        f"mknod /tmp/disk b {major} {minor}; echo mknod=$?; head -c 1 /tmp/disk >/dev/null; echo read=$?;"
        " ls /dev"
    )))
    assert "mknod=1" in out and "read=1" in out
    assert "vda" not in out and "sda" not in out  # only the default devices exist


async def test_no_module_loading_and_no_ptrace_of_the_host(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    out = await run(state_root, cid, bundle(sh(
        "insmod /bin/busybox; echo insmod=$?;"
        f" ls /proc/{os.getpid()} >/dev/null 2>&1; echo seehost=$?;"
        " ls /proc | grep -c '^[0-9]'"
    )))
    assert "insmod=0" not in out  # EPERM without CAP_SYS_MODULE (ENOSYS on a kernel without modules)
    assert "seehost=1" in out  # the host's processes are not even visible
    assert int(out.split()[-1]) <= 3  # sh, ls, grep


async def test_only_stdio_fds_in_init(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    leak = os.open("/", os.O_RDONLY | os.O_DIRECTORY)  # a host dir fd, as in CVE-2024-21626
    os.set_inheritable(leak, True)
    try:
        out = await run(state_root, cid, bundle(sh("ls /proc/self/fd; readlink /proc/1/cwd")))
    finally:
        os.close(leak)
    fds = out.split()[:-1]
    assert set(fds) <= {"0", "1", "2", "3"}  # 3 is ls's own directory fd
    assert out.split()[-1] == "/"


async def test_dropped_capabilities_stay_dropped(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    out = await run(state_root, cid, bundle(sh(
        "grep -E 'Cap(Prm|Eff|Bnd|Amb)' /proc/self/status; hostname evil; echo hostname=$?;"
        " chown 1000 /tmp; echo chown=$?"
    )))
    fields = status_fields(out)
    assert int(fields["CapBnd"], 16) == int(fields["CapPrm"], 16) == (1 << 5) | (1 << 10) | (1 << 29)
    assert "hostname=1" in out and "chown=1" in out


async def test_setuid_binary_under_no_new_privileges(
    bundle: BundleFactory, state_root: Path, cid: str, tmp_path: Path, rootfs: Path
) -> None:
    root = copy_rootfs(rootfs, tmp_path / "rootfs")
    suid = root / "bin/busybox-suid"  # busybox runs argv[1] as the applet for this name
    suid.write_bytes((root / "bin/busybox").read_bytes())
    suid.chmod(0o4755 | stat.S_IXUSR)
    os.chown(suid, 0, 0)
    out = await run(state_root, cid, bundle(
        ["/bin/busybox-suid", "id", "-u"],
        root={"path": str(root), "readonly": True},
        process={"user": {"uid": 1000, "gid": 1000}, "noNewPrivileges": True},
    ))
    assert out.split() == ["1000"]  # the setuid bit was not honoured


# --- user namespaces ------------------------------------------------------------------------


@pytest.fixture
def userns_rootfs(rootfs: Path) -> Iterator[Path]:
    """A copy of the rootfs owned by host uid/gid 100000 (container root), under a 0755 path
    the mapped root can walk (pytest's temp dirs are 0700)."""
    top = Path(tempfile.mkdtemp(prefix="aioruntime-userns-", dir="/tmp"))
    try:  # removed however the copy or the test ends
        top.chmod(0o755)
        root = copy_rootfs(rootfs, top / "rootfs")
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                st = os.lstat(name)
                os.lchown(name, HOST_ROOT + st.st_uid, HOST_ROOT + st.st_gid)
        yield root
    finally:
        shutil.rmtree(top)


HOST_ROOT = 100000
USERNS = {
    "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "user")],
    "uidMappings": [{"containerID": 0, "hostID": HOST_ROOT, "size": 65536}],
    "gidMappings": [{"containerID": 0, "hostID": HOST_ROOT, "size": 65536}],
}


async def test_user_namespace_root_is_an_unprivileged_host_uid(
    bundle: BundleFactory, state_root: Path, cid: str, userns_rootfs: Path
) -> None:
    b = bundle(
        sh("id -u; cat /proc/self/uid_map; touch /made-inside && echo wrote; ls -ln /made-inside; cat /proc/self/status"),
        root={"path": str(userns_rootfs), "readonly": False},
        linux=USERNS,
    )
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    try:
        assert c.pid is not None
        host = status_fields(Path(f"/proc/{c.pid}/status").read_text())
        assert host["Uid"].split()[0] == str(HOST_ROOT)  # the host sees an unprivileged uid
        assert os.readlink(f"/proc/{c.pid}/ns/user") != os.readlink("/proc/self/ns/user")
        await c.start()
        assert c.stdout is not None
        out = (await c.stdout.read()).decode()
        assert await c.wait() == 0
    finally:
        await c.delete(force=True)
    lines = out.splitlines()
    assert lines[0] == "0"  # root inside
    assert lines[1].split() == ["0", str(HOST_ROOT), "65536"]
    assert "wrote" in out
    assert (userns_rootfs / "made-inside").stat().st_uid == HOST_ROOT
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


async def test_user_namespace_without_mappings_is_refused(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"], linux={"namespaces": USERNS["namespaces"]})
    with pytest.raises(ConfigError) as e:
        await Container(cid, b, root=state_root).create()
    assert e.value.path == "linux.uidMappings"
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


# --- an unprivileged runtime ----------------------------------------------------------------


def _as_user(uid: int, xdg: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI run by ``uid`` (no capabilities, no groups), its state under ``xdg``."""
    env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(xdg), "PYTHONPATH": str(Path(aioruntime.__file__).parents[1])}
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", AIORUNTIME, *argv],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_rootless_spec_runs_as_an_unprivileged_user(rootfs: Path) -> None:
    uid = 1000
    top = Path(tempfile.mkdtemp(prefix="aioruntime-rootless-", dir="/tmp"))
    try:
        top.chmod(0o755)
        bundle = top / "bundle"
        copy_rootfs(rootfs, bundle / "rootfs")
        xdg = top / "xdg"
        xdg.mkdir(mode=0o700)
        for p in [top, *top.rglob("*")]:
            os.lchown(p, uid, uid)
        probe = _as_user(uid, xdg, "--version")
        if probe.returncode != 0:
            pytest.skip(f"uid {uid} cannot run this Python or package: {probe.stderr.strip()[-200:]}")
        spec = _as_user(uid, xdg, "spec", "--rootless", "-b", str(bundle))
        assert spec.returncode == 0, spec.stderr
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["process"].update(terminal=False, args=["sh", "-c", "id -u; cat /proc/self/uid_map"])
        (bundle / "config.json").write_text(json.dumps(cfg))
        run_ = _as_user(uid, xdg, "run", "-b", str(bundle), "rootless1")
        assert run_.returncode == 0, run_.stderr
        lines = run_.stdout.splitlines()
        assert lines[0] == "0" and lines[1].split() == ["0", str(uid), "1"]
        assert not list((xdg / "aioruntime").iterdir())  # deleted after the run
    finally:
        shutil.rmtree(top)


async def test_runtime_binary_never_reachable_through_proc_exe_during_exec(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    # runc's CVE-2019-5736: a process in the container opened the runtime's binary through
    # /proc/PID/exe of a process joining it. Ours are not dumpable until their execve, so
    # /proc/PID/exe of one stays closed to the container until it is the container's binary.
    watch = (
        "while :; do for p in /proc/[0-9]*; do"
        ' l=$(readlink $p/exe 2>/dev/null) && [ "$l" != /bin/busybox ] && echo "LEAK $p $l";'
        " done; echo round; done"
    )
    async with started(bundle(["sh", "-c", watch]), cid, state_root, stdout=PIPE) as c:
        for _ in range(40):
            p = await c.exec(["/bin/true"])
            assert await p.wait() == 0
        await c.kill(signal.SIGKILL)
        assert c.stdout is not None
        out = (await c.stdout.read()).decode()
    assert "LEAK" not in out, out
    assert "round" in out  # the watcher did look while the execs ran
