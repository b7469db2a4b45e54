"""``Container.exec`` and ``processes`` on the real kernel: a second process joins a running
container — its namespaces (compared through /proc/PID/ns), its cgroups, its root — runs
with the container's process settings and the exec's overrides, is our child (waited for
through its pidfd), and leaves nothing behind: no intermediate zombie, no fd, also when
it fails to start or the exec is cancelled."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import BundleFactory, assert_no_leftovers, cgroups_path_of, children, open_fds, started

from aioruntime import (
    DEVNULL,
    PIPE,
    STDOUT,
    ConfigError,
    Container,
    ContainerNotFoundError,
    InvalidStateError,
    SpawnError,
)
from aioruntime.ops.exec import Execution, exec_process
from aioruntime.spec import Process as ProcessSpec
from aioruntime.state import Store
from test_security import HOST_ROOT, USERNS, deny, userns_rootfs  # noqa: F401 - a fixture

SLEEP = ["sleep", "1000"]
CAP_SYS_ADMIN = 1 << 21
DEFAULT_CAPS = (1 << 5) | (1 << 10) | (1 << 29)  # CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE
JOINED = ("ipc", "uts", "net", "pid", "mnt")  # the default spec's namespaces (no cgroup, no user)


# -- helpers -------------------------------------------------------------------------------


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def ns_of(pid: int, name: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{name}")


async def output(c: Container, args: list[str], **kwargs: Any) -> tuple[str, int]:
    """(stdout and stderr, exit status) of ``args`` exec'd in ``c``."""
    p = await c.exec(args, stdout=PIPE, stderr=STDOUT, **kwargs)
    assert p.stdout is not None
    out = (await p.stdout.read()).decode()
    return out, await p.wait()


# -- output, exit status, settings ------------------------------------------------------------


async def test_output_and_exit_status(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        p = await c.exec(["sh", "-c", "echo hi; echo oops >&2; exit 3"], stdout=PIPE, stderr=PIPE)
        assert p.stdout is not None and p.stderr is not None
        assert await p.stdout.read() == b"hi\n"
        assert await p.stderr.read() == b"oops\n"
        assert await p.wait() == 3
        assert p.returncode == 3


async def test_stdin_pipe(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        p = await c.exec(["tr", "a-z", "A-Z"], stdin=PIPE, stdout=PIPE)
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(b"hello\n")
        await p.stdin.drain()
        p.stdin.close()
        assert await p.stdout.read() == b"HELLO\n"
        assert await p.wait() == 0


async def test_env_cwd_and_user(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        out, code = await output(
            c, ["sh", "-c", "id -u; id -g; id -G; pwd; echo $FOO; echo $TERM; echo $HOME; env | grep -c ^TERM="],
            env=["FOO=bar", "TERM=dumb"], cwd="/tmp", user="1000:1000", additional_gids=[5],
        )
        assert code == 0
        # TERM=dumb replaces the config's TERM=xterm (once, in its place); HOME from /etc/passwd
        assert out.split("\n") == ["1000", "1000", "1000 5", "/tmp", "bar", "dumb", "/home/user", "1", ""]


async def test_defaults_are_the_containers_process(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP, process={"cwd": "/etc", "env": ["A=1"], "user": {"uid": 1000, "gid": 1000}})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        out, code = await output(c, ["sh", "-c", "id -u; pwd; echo $A; echo $PATH"])
        assert (out, code) == ("1000\n/etc\n1\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", 0)


async def test_uid_alone_keeps_the_configs_gid(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        assert await output(c, ["id"], user=1000) == ("uid=1000(user) gid=0(root)\n", 0)


async def test_capabilities_and_no_new_privileges(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        p = await c.exec(SLEEP)
        try:
            # the config's sets (runc's default spec), as for the init
            assert int(status_field(p.pid, "CapEff"), 16) == DEFAULT_CAPS
            assert int(status_field(p.pid, "CapBnd"), 16) == DEFAULT_CAPS
            assert status_field(p.pid, "NoNewPrivs") == "1"
        finally:
            await p.signal(signal.SIGKILL)
            await p.wait()
        p = await c.exec(SLEEP, capabilities=["CAP_SYS_ADMIN"], no_new_privileges=False)
        try:
            for field in ("CapEff", "CapPrm", "CapBnd"):
                assert int(status_field(p.pid, field), 16) == DEFAULT_CAPS | CAP_SYS_ADMIN, field
            assert status_field(p.pid, "NoNewPrivs") == "0"
        finally:
            await p.signal(signal.SIGKILL)
            await p.wait()


async def test_rlimits_of_the_config_apply(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP, process={"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        assert await output(c, ["sh", "-c", "ulimit -n; ulimit -Hn"]) == ("256\n512\n", 0)


@pytest.mark.parametrize("no_new_privileges", [True, False], ids=["late-with-nnp", "early-without-nnp"])
async def test_seccomp_profile_of_the_config_applies(
    bundle: BundleFactory, state_root: Path, cid: str, no_new_privileges: bool
) -> None:
    b = bundle(SLEEP, process={"noNewPrivileges": no_new_privileges}, linux={"seccomp": deny("mkdir", "mkdirat")})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        out, code = await output(c, ["sh", "-c", "mkdir /tmp/x; echo mkdir=$?; ls -d /tmp"])
        assert "Operation not permitted" in out and "mkdir=1" in out, out
        assert out.endswith("/tmp\n") and code == 0  # everything else works
        p = await c.exec(SLEEP)
        assert status_field(p.pid, "Seccomp") == "2"  # a filter, as the init's
        await p.signal(signal.SIGKILL)
        await p.wait()


async def test_exact_process_spec(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    spec = ProcessSpec.from_dict({"args": ["sh", "-c", "echo $X; pwd; id -u"], "cwd": "/proc", "env": ["X=y"],
                                  "user": {"uid": 1000, "gid": 1000}})
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        p = await c.exec(process=spec, stdout=PIPE)
        assert p.stdout is not None
        assert await p.stdout.read() == b"y\n/proc\n1000\n"
        assert await p.wait() == 0


async def test_process_gets_only_stdio_fds(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        # the shell lists the fds of its child ls... so ask for the shell's own, from a child
        out, code = await output(c, ["sh", "-c", "ls /proc/$$/fd; true"])
        assert (out.split(), code) == (["0", "1", "2"], 0)


async def test_signal_dispositions_and_mask_are_reset(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            p = await c.exec(["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"], stdout=PIPE)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        assert p.stdout is not None
        assert (await p.stdout.read()).decode().split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16]
        assert await p.wait() == 0


# -- joining: namespaces, root, cgroups, our child ------------------------------------------


async def test_joins_every_namespace_of_the_container(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP, linux={"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        assert c.pid is not None
        p = await c.exec(SLEEP)
        try:
            for name in (*JOINED, "cgroup"):
                assert ns_of(p.pid, name) == ns_of(c.pid, name), name
                assert ns_of(p.pid, name) != ns_of(os.getpid(), name), name
            assert ns_of(p.pid, "user") == ns_of(os.getpid(), "user")  # the container has none of its own
            nspid = status_field(p.pid, "NSpid").split()
            assert len(nspid) == 2 and nspid[0] == str(p.pid) and int(nspid[1]) > 1
            # what it sees from inside: the container's hostname, root and pid 1
            out, code = await output(c, ["sh", "-c", "hostname; cat /proc/1/cmdline; echo; ls /"])
            assert code == 0
            host, cmdline, *root = out.split("\n")
            assert (host, cmdline) == ("runc", "sleep\0" + "1000\0")
            assert "work" not in root and "bin" in root
        finally:
            await p.signal(signal.SIGKILL)
            assert await p.wait() == -signal.SIGKILL


async def test_joins_a_user_namespace(bundle: BundleFactory, state_root: Path, cid: str, userns_rootfs: Path) -> None:
    b = bundle(SLEEP, root={"path": str(userns_rootfs), "readonly": False}, linux=USERNS)
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        assert c.pid is not None
        p = await c.exec(SLEEP)
        try:
            for name in ("user", *JOINED):
                assert ns_of(p.pid, name) == ns_of(c.pid, name), name
            assert status_field(p.pid, "Uid").split()[0] == str(HOST_ROOT)  # its root is no host root
            assert Path(f"/proc/{p.pid}/cgroup").read_text() == Path(f"/proc/{c.pid}/cgroup").read_text()
            q = await c.exec(SLEEP, user="1000:1000")
            assert status_field(q.pid, "Uid").split()[0] == str(HOST_ROOT + 1000)  # mapped as the init's
            await q.signal(signal.SIGKILL)
            await q.wait()
        finally:
            await p.signal(signal.SIGKILL)
            await p.wait()


async def test_shares_the_namespaces_the_config_does_not_list(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(SLEEP, hostname=None, linux={"namespaces": [{"type": "pid"}, {"type": "mount"}]})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        p = await c.exec(SLEEP)
        try:
            assert ns_of(p.pid, "pid") != ns_of(os.getpid(), "pid")
            for name in ("net", "ipc", "uts", "cgroup"):
                assert ns_of(p.pid, name) == ns_of(os.getpid(), name), name
        finally:
            await p.signal(signal.SIGKILL)
            await p.wait()


async def test_joins_the_root_of_a_no_pivot_container(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL, no_pivot=True) as c:
        out, code = await output(c, ["sh", "-c", "ls /; cat /proc/1/cmdline"])
        assert code == 0
        assert "work" not in out.split("\n") and "bin" in out.split("\n") and out.endswith("sleep\0" + "1000\0")


async def test_is_in_the_containers_cgroup_in_every_hierarchy(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        assert c.pid is not None
        p = await c.exec(SLEEP)
        try:
            ours = Path(f"/proc/{p.pid}/cgroup").read_text()
            assert ours == Path(f"/proc/{c.pid}/cgroup").read_text()
            assert f"{cid}\n" in ours
        finally:
            await p.signal(signal.SIGKILL)
            await p.wait()


async def test_we_stay_dumpable(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    # the process shares our memory until it execs, meanwhile not dumpable: we are again after
    pr_get_dumpable = 3
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    assert prctl(pr_get_dumpable, 0, 0, 0, 0) == 1
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        assert await output(c, ["true"]) == ("", 0)
        with pytest.raises(SpawnError):
            await c.exec(["nosuch"])
    assert prctl(pr_get_dumpable, 0, 0, 0, 0) == 1


async def test_threads_exec_at_the_same_time(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    # each exec has its own stacks in our memory, and the last one out makes us dumpable again
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    b = bundle(SLEEP, linux={"seccomp": deny("mkdir", "mkdirat")})  # a filter buffer per process too
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        process = exec_process(c.config.raw, ["sh", "-c", "mkdir /x 2>/dev/null; exit $?"])

        def run(n: int) -> list[int]:
            codes = []
            for _ in range(n):
                s = Execution(Store(state_root), cid, process, stdio=(-1, -1, -1)).run()
                info = os.waitid(os.P_PIDFD, s.pidfd, os.WEXITED)
                os.close(s.pidfd)
                assert info is not None
                codes.append(info.si_status)
            return codes

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(run, [15] * 4))
        assert results == [[1] * 15] * 4  # mkdir denied by the filter every time
    assert prctl(3, 0, 0, 0, 0) == 1  # PR_GET_DUMPABLE


async def test_is_our_child_and_leaves_no_intermediate(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        before, fds = children(), open_fds()
        p = await c.exec(SLEEP)
        assert children() - before == {p.pid}  # the intermediate is reaped already
        assert status_field(p.pid, "PPid") == str(os.getpid())
        await p.signal(signal.SIGTERM)
        assert await p.wait() == -signal.SIGTERM
        assert children() == before  # and reaped
        assert open_fds() == fds


# -- signals, processes ---------------------------------------------------------------------------


async def test_signal_reaches_the_process(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        p = await c.exec(["sh", "-c", 'trap "exit 7" INT; echo ready; while :; do sleep 0.05; done'], stdout=PIPE)
        assert p.stdout is not None
        assert await p.stdout.readline() == b"ready\n"
        await p.signal(signal.SIGINT)
        assert await p.wait() == 7
        await p.signal(signal.SIGINT)  # reaped: a no-op, never a recycled pid


async def test_processes_lists_every_process(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        assert c.pid is not None
        assert await c.processes() == [c.pid]
        p1, p2 = await c.exec(SLEEP), await c.exec(SLEEP)
        assert await c.processes() == sorted([c.pid, p1.pid, p2.pid])
        for p in (p1, p2):
            await p.signal(signal.SIGKILL)
            await p.wait()
        assert await c.processes() == [c.pid]


async def test_many_at_once(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        before = children()
        procs = await asyncio.gather(*(c.exec(["sh", "-c", f"exit {i}"]) for i in range(10)))
        assert [await p.wait() for p in procs] == list(range(10))
        assert children() == before


async def test_delete_kills_exec_processes(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP)
    c = Container(cid, b, root=state_root)
    await c.create()
    await c.start()
    p = await c.exec(SLEEP)
    await c.delete(force=True)
    assert await p.wait() == -signal.SIGKILL
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=p.pid)


async def test_cancelled_run_reaps_exec_processes_first(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    # without the loop, the delete of a cancelled run() must reap our exec'd process itself:
    # the init exits (and delete returns) only once every process of its namespace is reaped
    b = bundle(["sh", "-c", "echo up; exec sleep 1000"])
    c = Container(cid, b, root=state_root, stdout=PIPE)
    task = asyncio.create_task(c.run())
    for _ in range(1000):
        if c.stdout is not None:
            break
        await asyncio.sleep(0.005)
    assert c.stdout is not None and await c.stdout.readline() == b"up\n"
    p = await c.exec(SLEEP)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.returncode == -signal.SIGKILL
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=p.pid)


async def test_exec_through_a_loaded_container(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP)
    async with started(b, cid, state_root, stdin=DEVNULL):
        c = await Container.load(cid, root=state_root)
        assert await output(c, ["echo", "loaded"]) == ("loaded\n", 0)


# -- errors: typed, and nothing left ----------------------------------------------------------


async def test_missing_binary_has_runcs_wording(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        before, fds = children(), open_fds()
        with pytest.raises(SpawnError) as e:
            await c.exec(["nosuch"], stdout=PIPE)
        assert str(e.value) == 'exec: "nosuch": executable file not found in $PATH'
        with pytest.raises(SpawnError) as e:
            await c.exec(["/etc"])
        assert str(e.value) == 'exec: "/etc": permission denied'
        assert children() == before
        assert open_fds() == fds
        assert await c.processes() == [c.pid]


async def test_bad_cwd_fails_the_step(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        with pytest.raises(SpawnError) as e:
            await c.exec(["true"], cwd="/nonexistent")
        assert (e.value.step, e.value.path) == ("chdir", "/nonexistent")


async def test_bad_options_are_config_errors(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        with pytest.raises(ConfigError, match="process.user"):
            await c.exec(["true"], user="root")
        with pytest.raises(ConfigError, match="CAP_NOPE"):
            await c.exec(["true"], capabilities=["CAP_NOPE"])
        with pytest.raises(ConfigError, match=r"process\.cwd"):
            await c.exec(["true"], cwd="relative")
        with pytest.raises(ValueError, match="terminal"):
            await c.exec(["true"], terminal=True, stdout=PIPE)


async def test_exec_into_created_or_stopped_container(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    """As runc: a created container takes an exec (its init waits at the fifo, set up); a
    stopped one does not."""
    b = bundle(["sh", "-c", "exit 0"], hostname="made")
    c = Container(cid, b, root=state_root)
    await c.create()
    try:
        p = await c.exec(["hostname"], stdout=PIPE)
        assert p.stdout is not None
        assert (await p.stdout.read(), await p.wait()) == (b"made\n", 0)
        assert c.status == "created"
        await c.start()
        assert await c.wait() == 0
        before = children()
        with pytest.raises(InvalidStateError) as e:
            await c.exec(["true"])
        assert e.value.current == "stopped"
        assert "cannot exec container" in str(e.value)
        assert children() == before
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_exec_into_a_paused_container(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        await c.pause()
        before, fds = children(), open_fds()
        with pytest.raises(InvalidStateError) as e:
            await c.exec(["true"])
        assert (e.value.current, e.value.required) == ("paused", ("created", "running"))
        assert children() == before and open_fds() == fds
        await c.resume()
        assert await output(c, ["echo", "resumed"]) == ("resumed\n", 0)


async def test_exec_into_unknown_container(state_root: Path, cid: str) -> None:
    with pytest.raises(ContainerNotFoundError):
        await Container(cid, root=state_root).exec(["true"])


async def test_cancelled_exec_leaves_nothing(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        before, fds = children(), open_fds()
        task = asyncio.create_task(c.exec(SLEEP, stdout=PIPE))
        await asyncio.sleep(0)  # it started the process and waits for its report
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert children() == before
        assert open_fds() == fds
        assert await c.processes() == [c.pid]
