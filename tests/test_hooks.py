"""OCI hooks on the real kernel, with runc's semantics: where each kind runs, when, with
which state on stdin, and what its failure does (library and CLI).

Every hook here is a shell script appending one line to a log: its kind, the state it
read, and the namespaces it ran in. Runtime-namespace hooks (prestart, createRuntime,
poststart, poststop) and createContainer run /bin/sh of the host (createContainer runs
before pivot_root: it resolves paths in the host's view); startContainer runs the
container's /bin/sh and writes through a bind mount of the test's directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of

from aioruntime.container import Container
from aioruntime.errors import HookError, SpawnError
from aioruntime.spec import default_spec
from aioruntime.status import Status

GUARD = 60  # a guard against a hang, not a performance threshold
IN_CONTAINER = "/hooks"  # where the test's directory is bound in the container


def logger(log: str | Path, kind: str) -> str:
    """A script that appends ``kind``, the state it read, its mount and uts namespaces and
    its $0 and $HOOKVAR to ``log``, one JSON-ish line."""
    return (
        f'state=$(cat); printf "%s|%s|%s|%s|%s|%s\\n" {kind} "$state" '
        f'"$(readlink /proc/self/ns/mnt)" "$(readlink /proc/self/ns/uts)" "$0" "$HOOKVAR" >> {log}'
    )


def hook(script: str, *, path: str = "/bin/sh", timeout: int | None = None, env: list[str] | None = None,
         argv0: str = "sh") -> dict[str, Any]:
    h: dict[str, Any] = {"path": path, "args": [argv0, "-c", script]}
    if timeout is not None:
        h["timeout"] = timeout
    if env is not None:
        h["env"] = env
    return h


def with_dir(tmp_path: Path) -> dict[str, Any]:
    """Overrides that bind ``tmp_path`` at /hooks in the container."""
    mounts = default_spec()["mounts"] + [
        {"destination": IN_CONTAINER, "type": "bind", "source": str(tmp_path), "options": ["rbind", "rw"]}
    ]
    return {"mounts": mounts}


def lines(log: Path) -> list[list[str]]:
    return [line.split("|") for line in log.read_text().splitlines()] if log.exists() else []


def all_hooks(tmp_path: Path) -> dict[str, Any]:
    log = tmp_path / "log"
    inside = f"{IN_CONTAINER}/log"
    return {
        "prestart": [hook(logger(log, "prestart"))],
        "createRuntime": [hook(logger(log, "createRuntime"))],
        "createContainer": [hook(logger(log, "createContainer"))],
        "startContainer": [hook(logger(inside, "startContainer"))],
        "poststart": [hook(logger(log, "poststart"))],
        "poststop": [hook(logger(log, "poststop"))],
    }


def ns(what: str, pid: int | str = "self") -> str:
    return os.readlink(f"/proc/{pid}/ns/{what}")


async def test_each_kind_runs_once_in_place_with_its_state(
    bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str
) -> None:
    b = bundle(["true"], hooks=all_hooks(tmp_path), annotations={"a": "b"}, **with_dir(tmp_path))
    c = Container(cid, b, root=state_root)
    await c.create()
    pid = c.pid
    assert pid is not None
    container_mnt, container_uts = ns("mnt", pid), ns("uts", pid)
    assert [entry[0] for entry in lines(tmp_path / "log")] == ["prestart", "createRuntime", "createContainer"]
    await c.start()
    assert await c.wait() == 0
    await c.delete()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)

    got = lines(tmp_path / "log")
    kinds = [entry[0] for entry in got]
    assert kinds == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    expected = {  # runc's status and pid at each point (prestart: crun's and the OCI validation
        # suite's status); the in-container ones report getpid()
        "prestart": ("created", pid), "createRuntime": ("creating", pid), "createContainer": ("creating", 1),
        "startContainer": ("created", 1), "poststart": ("running", pid), "poststop": ("stopped", 0),
    }
    for kind, text, mnt, uts, _, _ in got:
        state = json.loads(text)
        assert (state["status"], state["pid"]) == expected[kind], kind
        assert (state["id"], state["bundle"], state["annotations"]) == (cid, str(b), {"a": "b"}), kind
        if kind in ("createContainer", "startContainer"):
            assert (mnt, uts) == (container_mnt, container_uts), kind
        else:
            assert (mnt, uts) == (ns("mnt"), ns("uts")), kind


async def test_args_env_and_default_env(bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str) -> None:
    """args[0] is the hook's argv[0]; env is its whole environment; without env a runtime
    hook gets the runtime's, an in-container one the process's (as runc's init has it)."""
    log = tmp_path / "log"
    hooks = {
        "prestart": [hook(logger(log, "prestart"), argv0="pre-sh", env=["HOOKVAR=given"])],
        "createRuntime": [hook(logger(log, "createRuntime"))],
        "createContainer": [hook(logger(log, "createContainer"), argv0="cc-sh")],
    }
    os.environ["HOOKVAR"] = "runtime's"
    try:
        b = bundle(["true"], hooks=hooks, process={"env": ["PATH=/bin:/usr/bin", "HOOKVAR=process's"]})
        c = Container(cid, b, root=state_root)
        await c.create()
        await c.delete(force=True)
    finally:
        del os.environ["HOOKVAR"]
    assert [(e[0], e[4], e[5]) for e in lines(log)] == [
        ("prestart", "pre-sh", "given"), ("createRuntime", "sh", "runtime's"), ("createContainer", "cc-sh", "process's"),
    ]


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
async def test_failing_create_hook_fails_create_leaving_nothing(
    bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str, kind: str
) -> None:
    log = tmp_path / "log"
    hooks = {kind: [hook(logger(log, "first")), hook("echo boom >&2; exit 3"), hook(logger(log, "never"))]}
    b = bundle(["true"], hooks=hooks)
    c = Container(cid, b, root=state_root)
    with pytest.raises(HookError) as e:
        await c.create()
    assert (e.value.kind, e.value.path, e.value.status, e.value.timed_out) == (kind, "/bin/sh", 3, False)
    assert "boom" in str(e.value) and kind in str(e.value) and "status 3" in str(e.value)
    assert [entry[0] for entry in lines(log)] == ["first"]
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


@pytest.mark.parametrize("kind", ["prestart", "createContainer"])
async def test_timeout_kills_the_hook(bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str, kind: str) -> None:
    """Past its timeout a hook is killed and create fails; nothing is left (the hook of a
    createContainer runs in the container's cgroup, whose removal proves it is gone)."""
    pid_file = tmp_path / "pid"
    hooks = {kind: [hook(f"echo $$ > {pid_file}; echo slow; exec sleep 1000", timeout=1)]}
    b = bundle(["true"], hooks=hooks)
    c = Container(cid, b, root=state_root)
    with pytest.raises(HookError) as e:
        await c.create()
    assert e.value.timed_out and e.value.kind == kind and "timeout of 1s" in str(e.value) and "slow" in str(e.value)
    if kind == "prestart":  # a host pid
        assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


@pytest.mark.parametrize("kind", ["prestart", "createContainer"])
async def test_missing_hook(bundle: BundleFactory, state_root: Path, cid: str, kind: str) -> None:
    b = bundle(["true"], hooks={kind: [{"path": "/no/such/hook"}]})
    with pytest.raises(HookError) as e:
        await Container(cid, b, root=state_root).create()
    assert (e.value.kind, e.value.path, e.value.status) == (kind, "/no/such/hook", 127)
    assert "No such file or directory" in str(e.value)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


async def test_init_failing_before_the_hooks_point(
    bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str
) -> None:
    """A mount that fails in the init: its error, and no prestart hook ran."""
    log = tmp_path / "log"
    mounts = default_spec()["mounts"] + [{"destination": "/x", "type": "nosuchfs", "source": "none"}]
    b = bundle(["true"], hooks={"prestart": [hook(logger(log, "prestart"))]}, mounts=mounts)
    with pytest.raises(SpawnError, match="mount"):
        await Container(cid, b, root=state_root).create()
    assert not log.exists()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


async def test_start_container_timeout(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"], hooks={"startContainer": [hook("exec sleep 1000", timeout=1)]})
    c = Container(cid, b, root=state_root)
    await c.create()
    pid = c.pid
    with pytest.raises(HookError) as e:
        await c.start()
    assert (e.value.kind, e.value.timed_out) == ("startContainer", True)
    await c.wait()
    await c.delete()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


async def test_failing_start_container_hook_fails_start(
    bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str
) -> None:
    """The init reports it through the exec fifo; the user's process never runs."""
    hooks = {"startContainer": [hook("echo inside >&2; exit 4")]}
    b = bundle(["sh", "-c", f"touch {IN_CONTAINER}/ran"], hooks=hooks, **with_dir(tmp_path))
    c = Container(cid, b, root=state_root)
    await c.create()
    pid = c.pid
    with pytest.raises(HookError) as e:
        await c.start()
    assert (e.value.kind, e.value.status, e.value.output.strip()) == ("startContainer", 4, "inside")
    assert await c.wait() != 0
    assert c.status is Status.STOPPED
    await c.delete()
    assert not (tmp_path / "ran").exists()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


async def test_failing_poststart_hook_kills_the_container(
    bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str
) -> None:
    b = bundle(["sleep", "1000"], hooks={"poststart": [hook("exit 5")]})
    c = Container(cid, b, root=state_root)
    await c.create()
    pid = c.pid
    with pytest.raises(HookError) as e:
        await c.start()
    assert (e.value.kind, e.value.status) == ("poststart", 5)
    assert await c.wait() == -9
    await c.delete()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


async def test_failing_poststop_hook_is_a_warning(
    bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "log"
    b = bundle(["true"], hooks={"poststop": [hook("echo sad >&2; exit 6"), hook(logger(log, "poststop"))]})
    with caplog.at_level(logging.WARNING, logger="aioruntime"):
        assert await Container(cid, b, root=state_root).run() == 0
    assert [entry[0] for entry in lines(log)] == ["poststop"]
    assert any("poststop hook /bin/sh exited with status 6: sad" in r.getMessage() for r in caplog.records)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


@pytest.mark.parametrize("kind", ["prestart", "poststart", "poststop"])
async def test_the_loop_runs_during_a_slow_hook(
    bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str, kind: str
) -> None:
    """The hook waits for a line that only a task of this same loop writes: the operation
    completes only if the loop kept running while it awaited the hook."""
    fifo, started = tmp_path / "fifo", tmp_path / "started"
    os.mkfifo(fifo)
    b = bundle(["true"], hooks={kind: [hook(f"touch {started}; read line < {fifo}")]})
    c = Container(cid, b, root=state_root)

    async def release() -> None:
        while not started.exists():
            await asyncio.sleep(0.01)
        fd = os.open(fifo, os.O_WRONLY)  # the hook has it open for reading, or is about to
        os.write(fd, b"go\n")
        os.close(fd)

    helper = asyncio.create_task(release())
    try:
        assert await asyncio.wait_for(c.run(), GUARD) == 0
        await asyncio.wait_for(helper, GUARD)
    finally:
        helper.cancel()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


async def test_cancelled_during_a_prestart_hook(bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str) -> None:
    """Cancelling create while a hook runs kills the hook and leaves nothing."""
    pid_file = tmp_path / "pid"
    b = bundle(["true"], hooks={"prestart": [hook(f"echo $$ > {pid_file}; exec sleep 1000")]})
    task = asyncio.create_task(Container(cid, b, root=state_root).create())
    while not (pid_file.exists() and pid_file.read_text().strip()):
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


# --- the command line ----------------------------------------------------------------


def cli(root: Path, *args: str, command: tuple[str, ...] = (AIORUNTIME,)) -> subprocess.CompletedProcess[str]:
    """Output into files: an init that inherits them and outlives the call cannot hold it open."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run([*command, "--root", str(root), *args], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=err, timeout=GUARD, check=False)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read().decode(), err.read().decode())


def test_cli_runs_every_kind(bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str) -> None:
    b = bundle(["true"], hooks=all_hooks(tmp_path), **with_dir(tmp_path))
    assert cli(state_root, "run", "-b", str(b), cid).returncode == 0
    kinds = [entry[0] for entry in lines(tmp_path / "log")]
    assert kinds == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


def test_cli_create_fails_on_a_failing_hook(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"], hooks={"createRuntime": [hook("echo nope >&2; exit 2")]})
    r = cli(state_root, "create", "-b", str(b), cid)
    assert r.returncode == 1
    assert "createRuntime hook /bin/sh exited with status 2: nope" in r.stderr
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


def test_cli_start_fails_on_a_failing_start_container_hook(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"], hooks={"startContainer": [hook("exit 9")]})
    assert cli(state_root, "create", "-b", str(b), cid).returncode == 0
    r = cli(state_root, "start", cid)
    assert (r.returncode, "startContainer hook /bin/sh exited with status 9" in r.stderr) == (1, True)
    assert cli(state_root, "delete", "-f", cid).returncode == 0
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


def test_cli_poststop_failure_is_a_logged_warning(bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str) -> None:
    log = tmp_path / "runtime.log"
    b = bundle(["true"], hooks={"poststop": [hook("exit 1")]})
    r = cli(state_root, "--log", str(log), "--log-format", "json", "run", "-b", str(b), cid)
    assert r.returncode == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["level"], e["msg"]) for e in entries] == [("warning", "poststop hook /bin/sh exited with status 1")]
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


def test_cli_with_hooks_does_not_import_asyncio(bundle: BundleFactory, tmp_path: Path, state_root: Path, cid: str) -> None:
    b = bundle(["true"], hooks=all_hooks(tmp_path), **with_dir(tmp_path))
    for args in (["create", "-b", str(b), cid], ["start", cid], ["delete", "-f", cid]):
        r = cli(state_root, *args, command=(sys.executable, "-X", "importtime", "-m", "aioruntime.cli"))
        assert r.returncode == 0, (args, r.stderr[-2000:])
        imported = [line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
        assert "aioruntime.hooks" in imported and "asyncio" not in imported, args
    assert len(lines(tmp_path / "log")) == 6
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))
