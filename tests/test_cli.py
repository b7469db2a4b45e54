"""The ``aioruntime`` command line on the real kernel, held against runc's behaviour.

Every test runs the installed console script as a subprocess (no mocks). Where runc is
installed, its output on the same bundle is the reference: state JSON, list layout, exit
codes. A CLI ``create`` leaves the init running after the CLI exits, as runc does; the
``reaper`` fixture makes this test process a child subreaper for the test (the role conmon
or containerd-shim plays), so those inits become our children and are reaped here, and
"nothing left" can include "not even a zombie".
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from helpers import (
    AIORUNTIME,
    BundleFactory,
    assert_no_leftovers,
    cgroups_path_of,
    config_of,
)

from tools.cgroup_tree import cgroup_dirs

RUNC = shutil.which("runc")
needs_runc = pytest.mark.skipif(RUNC is None, reason="runc is not installed")

STATE_KEYS = ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]
"""runc's state document (no annotations in these bundles), in runc's key order."""

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
TIMEOUT = 60  # a guard against a hung call, not a performance threshold

SLEEP = ["sleep", "1000"]
# pid 1 of a pid namespace ignores signals it has no handler for, so SIGTERM needs a trap
TRAP_TERM = ["sh", "-c", 'trap "exit 7" TERM; echo ready; while :; do sleep 0.1; done']


# --- running the two runtimes ---------------------------------------------------------


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _run(cmd: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> Result:
    """Run ``cmd`` with stdin from /dev/null and stdout/stderr into files: a container that
    inherits them and outlives the call cannot hold the call open, as a pipe would."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
                              timeout=TIMEOUT, check=False)
        out.seek(0)
        err.seek(0)
        return Result(proc.returncode, out.read().decode(), err.read().decode())


def cli(root: Path | None, *args: str, cwd: str | os.PathLike[str] | None = None) -> Result:
    """``aioruntime [--root ROOT] ARGS...``"""
    return _run([AIORUNTIME, *(["--root", str(root)] if root is not None else []), *args], cwd)


def runc(root: Path, *args: str, cwd: str | os.PathLike[str] | None = None) -> Result:
    assert RUNC is not None
    return _run([RUNC, "--root", str(root), *args], cwd)


def error_text(stderr: str) -> str:
    """The message of a runc-style error line (``time=... level=error msg="..."``), unquoted."""
    m = re.search(r'level=error msg=("(?:[^"\\]|\\.)*")', stderr)
    return str(json.loads(m.group(1))) if m else stderr


def ok(result: Result) -> Result:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result


def state_of(root: Path, cid: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(cli(root, "state", cid)).stdout)
    return doc


def copy_bundle(src: Path, dest: Path, cgroups_path: str) -> Path:
    """The same bundle (same rootfs, same process) for runc, in its own cgroup."""
    cfg = config_of(src)
    cfg["linux"]["cgroupsPath"] = cgroups_path
    dest.mkdir()
    (dest / "config.json").write_text(json.dumps(cfg, indent="\t"))
    return dest


def tabwriter(rows: Sequence[Sequence[str]]) -> str:
    """Go's text/tabwriter as runc's ``list`` sets it up: minwidth 12, padding 3, spaces;
    every cell but the last of a line is padded to its column's width."""
    widths = [max(12, max(len(r[i]) for r in rows) + 3) for i in range(len(rows[0]) - 1)]
    return "".join("".join(c.ljust(w) for c, w in zip(r, widths)) + r[-1] + "\n" for r in rows)


# --- reaping the inits a CLI leaves behind --------------------------------------------

PR_SET_CHILD_SUBREAPER = 36


class Reaper:
    """Waits for and reaps container inits orphaned to this process."""

    def __init__(self) -> None:
        self.pids: set[int] = set()

    def track(self, pid: int) -> int:
        self.pids.add(pid)
        return pid

    def wait(self, pid: int) -> int:
        """Block until our child ``pid`` exits and reap it: its exit code (-N: killed by N)."""
        fd = os.pidfd_open(pid)
        try:
            ready, _, _ = select.select([fd], [], [], TIMEOUT)
        finally:
            os.close(fd)
        assert ready, f"process {pid} did not exit"
        _, status = os.waitpid(pid, 0)
        self.pids.discard(pid)
        return os.waitstatus_to_exitcode(status)

    def sweep(self) -> None:
        for pid in self.pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _prctl_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(int(on)), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    """This process is a child subreaper for the test (like conmon or containerd-shim)."""
    _prctl_subreaper(True)
    r = Reaper()
    try:
        yield r
    finally:
        _prctl_subreaper(False)
        r.sweep()


def create(root: Path, bundle: Path, cid: str, reaper: Reaper, *flags: str) -> int:
    """``aioruntime create --pid-file``; the init's pid (tracked by ``reaper``)."""
    pid_file = bundle / "init.pid"
    ok(cli(root, "create", "-b", str(bundle), "--pid-file", str(pid_file), *flags, cid))
    return reaper.track(int(pid_file.read_text()))


def create_piped(root: Path, bundle: Path, cid: str, reaper: Reaper, *flags: str) -> tuple[int, IO[bytes]]:
    """``create`` with the container's stdout on a pipe we read: (init pid, its stdout)."""
    pid_file = bundle / "init.pid"
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [AIORUNTIME, "--root", str(root), "create", "-b", str(bundle), "--pid-file", str(pid_file), *flags, cid],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
        )
        assert proc.stdout is not None
        try:
            code = proc.wait(TIMEOUT)
        except BaseException:
            proc.kill()
            proc.stdout.close()
            raise
        err.seek(0)
        if code != 0:
            proc.stdout.close()
            pytest.fail(f"create exited {code}: {err.read().decode()}")
    return reaper.track(int(pid_file.read_text())), proc.stdout


def force_delete(root: Path, cid: str, reaper: Reaper, pid: int) -> int:
    """``delete -f``, then reap the init: its exit code."""
    ok(cli(root, "delete", "-f", cid))
    return reaper.wait(pid)


# --- spec ------------------------------------------------------------------------------


def test_spec_writes_runcs_default_config_in_cwd(tmp_path: Path, state_root: Path) -> None:
    ours = tmp_path / "ours"
    ours.mkdir()
    ok(cli(state_root, "spec", cwd=ours))
    text = (ours / "config.json").read_text()
    spec = json.loads(text)
    assert spec["process"]["args"] == ["sh"] and spec["root"] == {"path": "rootfs", "readonly": True}
    if RUNC:
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        ok(runc(tmp_path / "runc-root", "spec", cwd=theirs))
        assert text == (theirs / "config.json").read_text()


@pytest.mark.parametrize("flag", ["-b", "--bundle", "-bundle"])
def test_spec_bundle_flag_writes_into_the_bundle(tmp_path: Path, state_root: Path, flag: str) -> None:
    target = tmp_path / "target"
    target.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    ok(cli(state_root, "spec", flag, str(target), cwd=elsewhere))
    assert json.loads((target / "config.json").read_text())["ociVersion"]
    assert list(elsewhere.iterdir()) == []


def test_spec_rootless(tmp_path: Path, state_root: Path) -> None:
    ok(cli(state_root, "spec", "--rootless", cwd=tmp_path))
    text = (tmp_path / "config.json").read_text()
    spec = json.loads(text)
    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"] and spec["linux"]["gidMappings"]
    if RUNC:
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        ok(runc(tmp_path / "runc-root", "spec", "--rootless", cwd=theirs))
        assert text == (theirs / "config.json").read_text()


def test_spec_refuses_to_overwrite_config(tmp_path: Path, state_root: Path) -> None:
    (tmp_path / "config.json").write_text("mine")
    r = cli(state_root, "spec", cwd=tmp_path)
    assert r.returncode == 1
    assert "config.json" in r.stderr and "exists" in r.stderr
    assert (tmp_path / "config.json").read_text() == "mine"
    if RUNC:
        assert runc(tmp_path / "runc-root", "spec", cwd=tmp_path).returncode == 1


# --- create, state, start --------------------------------------------------------------


def test_create_state_start_delete(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                   rootfs: Path) -> None:
    b = bundle(SLEEP)
    pid_file = b / "init.pid"
    ok(cli(state_root, "create", "-b", str(b), "--pid-file", str(pid_file), cid))
    text = pid_file.read_text()
    assert re.fullmatch(r"[1-9][0-9]*", text), f"pid file holds {text!r}"  # decimal, no newline
    pid = reaper.track(int(text))
    assert os.path.exists(f"/proc/{pid}")

    r = ok(cli(state_root, "state", cid))
    st = json.loads(r.stdout)
    assert list(st) == STATE_KEYS
    assert st["ociVersion"] == "1.0.2-dev"
    assert (st["id"], st["pid"], st["status"]) == (cid, pid, "created")
    assert (st["bundle"], st["rootfs"], st["owner"]) == (str(b), str(rootfs), "")
    assert RFC3339.match(st["created"]), st["created"]
    assert r.stdout.rstrip("\n") == json.dumps(st, indent=2)  # runc's MarshalIndent layout

    ok(cli(state_root, "start", cid))
    st = state_of(state_root, cid)
    assert (st["status"], st["pid"]) == ("running", pid)
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"1000"]

    assert force_delete(state_root, cid, reaper, pid) == -signal.SIGKILL
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid, rootfs=rootfs)


@needs_runc
def test_state_json_shape_matches_runc(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                       tmp_path: Path) -> None:
    b = bundle(SLEEP)
    runc_root = tmp_path / "runc-root"
    rb = copy_bundle(b, tmp_path / "runc-bundle", cgroups_path_of(b) + "-runc")
    pid = create(state_root, b, cid, reaper)
    ok(runc(runc_root, "create", "-b", str(rb), cid))
    ours, theirs = state_of(state_root, cid), json.loads(ok(runc(runc_root, "state", cid)).stdout)
    runc_pid = reaper.track(theirs["pid"])
    try:
        assert list(ours) == list(theirs) == STATE_KEYS
        for key in ("ociVersion", "id", "status", "rootfs", "owner"):
            assert ours[key] == theirs[key], key
        assert RFC3339.match(theirs["created"]) and RFC3339.match(ours["created"])

        ok(cli(state_root, "start", cid))
        ok(runc(runc_root, "start", cid))
        assert state_of(state_root, cid)["status"] == json.loads(runc(runc_root, "state", cid).stdout)["status"]
    finally:
        runc(runc_root, "delete", "-f", cid)
    reaper.wait(runc_pid)
    force_delete(state_root, cid, reaper, pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)
    assert_no_leftovers(runc_root, cid, cgroups_path_of(rb), pid=runc_pid)


# --- kill ------------------------------------------------------------------------------


def test_kill_default_is_sigterm(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    b = bundle(TRAP_TERM)
    pid, out = create_piped(state_root, b, cid, reaper)
    with out:
        ok(cli(state_root, "start", cid))
        assert out.readline() == b"ready\n"  # the trap is set
        ok(cli(state_root, "kill", cid))
        assert reaper.wait(pid) == 7
    st = state_of(state_root, cid)
    assert (st["status"], st["pid"]) == ("stopped", 0)
    ok(cli(state_root, "delete", cid))  # a stopped container needs no -f
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


@pytest.mark.parametrize("sig", ["KILL", "SIGKILL", "9", "kill"])
def test_kill_signal_spellings(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper, sig: str) -> None:
    b = bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "start", cid))
    ok(cli(state_root, "kill", cid, sig))
    assert reaper.wait(pid) == -signal.SIGKILL
    assert state_of(state_root, cid)["status"] == "stopped"
    ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


@pytest.mark.parametrize("sig", ["FOO", "SIGFOO", "99"])
def test_kill_unknown_signal(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper, sig: str) -> None:
    b = bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "start", cid))
    r = cli(state_root, "kill", cid, sig)
    assert r.returncode == 1
    assert r.stderr.strip()
    if not sig.isdigit():
        assert sig in r.stderr
    assert state_of(state_root, cid)["status"] == "running"
    force_delete(state_root, cid, reaper, pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


@pytest.mark.parametrize("flag", ["--all", "-a"])
def test_kill_all_signals_every_process(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                        flag: str) -> None:
    # pid 1 ignores SIGTERM (no handler) and waits for its children: it only exits if the
    # two sleeps got the signal too
    b = bundle(["sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait; echo done"])
    pid, out = create_piped(state_root, b, cid, reaper)
    with out:
        ok(cli(state_root, "start", cid))
        assert out.readline() == b"ready\n"
        ok(cli(state_root, "kill", flag, cid))
        assert reaper.wait(pid) == 0
        assert out.read() == b"done\n"
    ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


def test_kill_all_on_stopped_container_succeeds_like_runc(state_root: Path, bundle: BundleFactory, cid: str,
                                                          reaper: Reaper, tmp_path: Path) -> None:
    """runc: ``kill --all`` signals what is left in the cgroup, so a stopped container is
    no error (exit 0); only a plain ``kill`` of a stopped container fails."""
    b = bundle(["true"])
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "start", cid))
    reaper.wait(pid)
    try:
        assert cli(state_root, "kill", cid, "KILL").returncode == 1
        if RUNC:
            runc_root = tmp_path / "runc-root"
            rb = copy_bundle(b, tmp_path / "runc-bundle", cgroups_path_of(b) + "-runc")
            ok(runc(runc_root, "run", "--keep", "-b", str(rb), cid))
            try:
                assert runc(runc_root, "kill", cid, "KILL").returncode == 1
                assert runc(runc_root, "kill", "--all", cid, "KILL").returncode == 0
            finally:
                ok(runc(runc_root, "delete", "-f", cid))
        r = cli(state_root, "kill", "--all", cid, "KILL")
        assert r.returncode == 0, r.stderr
    finally:
        ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


def test_kill_created_container(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    """A manager aborting a create kills the blocked init: it stops, and deletes without -f."""
    b = bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "kill", cid, "KILL"))
    assert reaper.wait(pid) == -signal.SIGKILL
    st = state_of(state_root, cid)
    assert (st["status"], st["pid"]) == ("stopped", 0)
    assert cli(state_root, "start", cid).returncode == 1
    ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


# --- delete and unknown ids ------------------------------------------------------------


def test_delete_running_needs_force(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                    rootfs: Path) -> None:
    b = bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "start", cid))
    r = cli(state_root, "delete", cid)
    assert r.returncode == 1
    assert "running" in r.stderr and cid in r.stderr
    assert state_of(state_root, cid)["status"] == "running"
    assert force_delete(state_root, cid, reaper, pid) == -signal.SIGKILL
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid, rootfs=rootfs)


def test_delete_created_without_force(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    """As runc: nothing of the user's ran yet, so a created container is deleted without -f."""
    b = bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "delete", cid))
    reaper.wait(pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


def test_unknown_container(state_root: Path) -> None:
    assert cli(state_root, "delete", "-f", "nosuch").returncode == 0
    for args in (["delete", "nosuch"], ["state", "nosuch"], ["start", "nosuch"], ["kill", "nosuch"]):
        r = cli(state_root, *args)
        assert r.returncode == 1, args
        assert "does not exist" in r.stderr, args
    assert list(state_root.iterdir()) == []


def test_create_from_the_bundle_directory(state_root: Path, bundle: BundleFactory, cid: str,
                                          reaper: Reaper) -> None:
    """``-b`` defaults to the cwd, and relative paths are the cwd's; state records absolute ones."""
    b = bundle(SLEEP)
    ok(cli(state_root, "create", "--pid-file", "init.pid", cid, cwd=b))
    pid = reaper.track(int((b / "init.pid").read_text()))
    assert state_of(state_root, cid)["bundle"] == str(b)
    force_delete(state_root, cid, reaper, pid)
    b2 = bundle(SLEEP)
    ok(cli(state_root, "create", "-b", b2.name, "--pid-file", f"{b2.name}/init.pid", cid, cwd=b2.parent))
    pid2 = reaper.track(int((b2 / "init.pid").read_text()))
    assert state_of(state_root, cid)["bundle"] == str(b2)
    force_delete(state_root, cid, reaper, pid2)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b2), pid=pid2)


# --- list ------------------------------------------------------------------------------


def test_list_empty(state_root: Path, tmp_path: Path) -> None:
    header = "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
    assert ok(cli(state_root, "list")).stdout == header
    assert ok(cli(state_root, "list", "-q")).stdout == ""
    assert ok(cli(state_root, "list", "--format", "json")).stdout == "null\n"
    assert ok(cli(state_root, "list", "-f", "json")).stdout == "null\n"
    if RUNC:
        runc_root = tmp_path / "runc-root"
        assert ok(runc(runc_root, "list")).stdout == header
        assert ok(runc(runc_root, "list", "-f", "json")).stdout == "null\n"


def test_list_formats(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    b1, b2 = bundle(SLEEP), bundle(SLEEP)
    ids = [cid + "-a", cid + "-b"]
    pids = [create(state_root, b1, ids[0], reaper), create(state_root, b2, ids[1], reaper)]
    ok(cli(state_root, "start", ids[1]))
    try:
        assert ok(cli(state_root, "list", "-q")).stdout == "".join(i + "\n" for i in ids)

        for flags in (["--format", "json"], ["-f", "json"]):
            listed = json.loads(ok(cli(state_root, "list", *flags)).stdout)
            assert [s["id"] for s in listed] == ids
            for s, i, pid, status in zip(listed, ids, pids, ["created", "running"]):
                assert list(s) == STATE_KEYS
                assert (s["pid"], s["status"], s["owner"]) == (pid, status, "root")
                assert {**state_of(state_root, i), "owner": "root"} == s

        table = ok(cli(state_root, "list")).stdout
        rows = [line.split() for line in table.splitlines()]
        assert rows[0] == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
        assert [r[:4] + r[5:] for r in rows[1:]] == [
            [ids[0], str(pids[0]), "created", str(b1), "root"],
            [ids[1], str(pids[1]), "running", str(b2), "root"],
        ]
        assert table == tabwriter(rows)
    finally:
        for i, pid in zip(ids, pids):
            force_delete(state_root, i, reaper, pid)
    for i, b, pid in zip(ids, (b1, b2), pids):
        assert_no_leftovers(state_root, i, cgroups_path_of(b), pid=pid)


@needs_runc
@pytest.mark.parametrize("start", [False, True], ids=["created", "running"])
def test_list_table_layout_matches_runc(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                        tmp_path: Path, start: bool) -> None:
    b = bundle(SLEEP)
    runc_root = tmp_path / "runc-root"
    rb = copy_bundle(b, tmp_path / "runcbd", cgroups_path_of(b) + "-runc")  # as long a path as b's
    pid = create(state_root, b, cid, reaper)
    ok(runc(runc_root, "create", "-b", str(rb), cid))
    runc_pid = reaper.track(json.loads(ok(runc(runc_root, "state", cid)).stdout)["pid"])
    try:
        if start:
            ok(cli(state_root, "start", cid))
            ok(runc(runc_root, "start", cid))
        ours, theirs = ok(cli(state_root, "list")).stdout, ok(runc(runc_root, "list")).stdout
        our_rows = [line.split() for line in ours.splitlines()]
        their_rows = [line.split() for line in theirs.splitlines()]
        assert theirs == tabwriter(their_rows)  # the reference layout is runc's
        assert ours == tabwriter(our_rows)
        assert our_rows[0] == their_rows[0]
        assert [r[2] for r in our_rows] == [r[2] for r in their_rows]  # STATUS
        assert [r[5] for r in our_rows] == [r[5] for r in their_rows]  # OWNER
    finally:
        runc(runc_root, "delete", "-f", cid)
    reaper.wait(runc_pid)
    force_delete(state_root, cid, reaper, pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


# --- run -------------------------------------------------------------------------------


def test_run_foreground_passes_output_and_exit_status(state_root: Path, bundle: BundleFactory, cid: str,
                                                      rootfs: Path) -> None:
    b = bundle(["sh", "-c", "echo out; echo err >&2; exit 3"])
    pid_file = b / "init.pid"
    r = cli(state_root, "run", "-b", str(b), "--pid-file", str(pid_file), cid)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=int(pid_file.read_text()), rootfs=rootfs)


def test_run_foreground_killed_exits_128_plus_signal(state_root: Path, bundle: BundleFactory, cid: str) -> None:
    b = bundle(["sh", "-c", "echo ready; exec sleep 1000"])
    pid_file = b / "init.pid"
    proc = subprocess.Popen([AIORUNTIME, "--root", str(state_root), "run", "-b", str(b), "--pid-file",
                             str(pid_file), cid], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with proc, proc.stdout:
        try:
            assert proc.stdout.readline() == b"ready\n"
            ok(cli(state_root, "kill", cid, "KILL"))
            assert proc.wait(TIMEOUT) == 128 + signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=int(pid_file.read_text()))


def test_run_detached(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    b = bundle(SLEEP)
    pid_file = b / "init.pid"
    ok(cli(state_root, "run", "-d", "--pid-file", str(pid_file), "-b", str(b), cid))
    pid = reaper.track(int(pid_file.read_text()))
    st = state_of(state_root, cid)
    assert (st["status"], st["pid"]) == ("running", pid)
    ok(cli(state_root, "kill", cid, "KILL"))
    assert reaper.wait(pid) == -signal.SIGKILL
    ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


# --- --no-pivot ------------------------------------------------------------------------


def test_no_pivot(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper, rootfs: Path) -> None:
    b = bundle(["sh", "-c", "cat /etc/hostname; echo no-pivot-ok; exit 5"])
    pid, out = create_piped(state_root, b, cid, reaper, "--no-pivot")
    with out:
        assert state_of(state_root, cid)["status"] == "created"
        ok(cli(state_root, "start", cid))
        assert reaper.wait(pid) == 5
        assert out.read() == b"busybox\nno-pivot-ok\n"  # the rootfs's /etc/hostname
    ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid, rootfs=rootfs)


# --- the CLI and the library on one root -----------------------------------------------


async def test_library_container_managed_by_cli(state_root: Path, bundle: BundleFactory, cid: str) -> None:
    from aioruntime import DEVNULL, Container, Status

    b = bundle(SLEEP)
    c = Container(cid, b, root=state_root, stdout=DEVNULL, stderr=DEVNULL)
    await c.create()
    pid = c.pid
    assert pid is not None
    try:
        assert ok(cli(state_root, "list", "-q")).stdout == cid + "\n"
        listed = json.loads(ok(cli(state_root, "list", "-f", "json")).stdout)
        assert [(s["id"], s["pid"], s["status"], s["owner"]) for s in listed] == [(cid, pid, "created", "root")]
        st = state_of(state_root, cid)
        assert list(st) == STATE_KEYS and (st["pid"], st["status"], st["bundle"]) == (pid, "created", str(b))

        ok(cli(state_root, "start", cid))
        assert c.status is Status.RUNNING
        assert state_of(state_root, cid)["status"] == "running"
    finally:
        ok(cli(state_root, "delete", "-f", cid))
    assert await c.wait() == -signal.SIGKILL  # reaped by the library, its parent
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


async def test_cli_container_loaded_by_library(state_root: Path, bundle: BundleFactory, cid: str,
                                               reaper: Reaper) -> None:
    from aioruntime import Container, Status

    b = bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    c = await Container.load(cid, root=state_root)
    assert (c.pid, c.bundle, c.status) == (pid, str(b), Status.CREATED)
    process = c.config.process
    assert process is not None and process.args == tuple(SLEEP)
    assert c.state() == state_of(state_root, cid)
    assert [x.id for x in await Container.list(root=state_root)] == [cid]

    await c.start()
    assert state_of(state_root, cid)["status"] == "running"
    await c.kill(signal.SIGKILL)
    await c.wait()
    assert reaper.wait(pid) == -signal.SIGKILL
    assert ok(cli(state_root, "state", cid)).stdout and c.status is Status.STOPPED
    await c.delete()
    assert ok(cli(state_root, "list", "-q")).stdout == ""
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


# --- global flags ----------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["--", "-"])
def test_log_json(state_root: Path, tmp_path: Path, spelling: str) -> None:
    log = tmp_path / "log.json"
    r = cli(None, f"{spelling}root", str(state_root), f"{spelling}log", str(log), f"{spelling}log-format", "json",
            "state", "nosuch")
    assert r.returncode == 1
    assert "does not exist" in r.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert list(entry) == ["level", "msg", "time"]
    assert entry["level"] == "error" and "does not exist" in entry["msg"]
    assert RFC3339.match(entry["time"]), entry["time"]


def test_log_text(state_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    r = cli(state_root, "--log", str(log), "--log-format", "text", "delete", "nosuch")
    assert r.returncode == 1
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    m = re.fullmatch(r'time="([^"]+)" level=error msg="(.*)"', lines[0])
    assert m, lines[0]
    assert RFC3339.match(m.group(1)) and "does not exist" in m.group(2)
    # without --log the same line goes to stderr
    r = cli(state_root, "state", "nosuch")
    assert re.fullmatch(r'time="[^"]+" level=error msg=".*does not exist.*"\n', r.stderr), r.stderr


def test_debug_accepted(state_root: Path) -> None:
    assert cli(state_root, "--debug", "list", "-q").returncode == 0
    assert cli(state_root, "--debug", "state", "nosuch").returncode == 1


@pytest.mark.parametrize("root_flag, bundle_flag, pid_flag", [
    ("--root", "--bundle", "--pid-file"),
    ("-root", "-bundle", "-pid-file"),
    ("-root", "-b", "--pid-file"),
])
def test_runc_flag_spellings(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                             root_flag: str, bundle_flag: str, pid_flag: str) -> None:
    b = bundle(SLEEP)
    pid_file = b / "init.pid"
    ok(cli(None, root_flag, str(state_root), "create", bundle_flag, str(b), pid_flag, str(pid_file), cid))
    pid = reaper.track(int(pid_file.read_text()))
    assert ok(cli(None, root_flag, str(state_root), "list", "-q")).stdout == cid + "\n"
    ok(cli(None, root_flag, str(state_root), "delete", "-force", cid))
    reaper.wait(pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


def test_version(tmp_path: Path) -> None:
    """``runc --version`` (and ``-v``) is what docker info and podman info call: exit 0, the
    first line ``NAME version X``, and a ``spec: X`` line with the OCI spec version."""
    if RUNC:
        theirs = ok(runc(tmp_path / "runc-root", "--version")).stdout.splitlines()
        assert re.fullmatch(r"runc version \S+", theirs[0]) and "spec: 1.0.2-dev" in theirs
    for flag in ("--version", "-v"):
        lines = ok(cli(None, flag)).stdout.splitlines()
        assert lines and re.fullmatch(r"aioruntime version \S+", lines[0]), lines
        assert "spec: 1.0.2-dev" in lines


@pytest.mark.parametrize("args", [["kill"], ["start", "a", "b"], ["list", "--bogus"], ["--log-format", "xml", "list"]],
                         ids=["missing-id", "extra-arg", "unknown-flag", "bad-log-format"])
def test_usage_errors_exit_1_like_runc(state_root: Path, tmp_path: Path, args: list[str]) -> None:
    """runc (urfave/cli) exits 1 on a usage error, like on any other error."""
    if RUNC:
        assert runc(tmp_path / "runc-root", *args).returncode == 1
    r = cli(state_root, *args)
    assert r.stderr.strip()
    assert r.returncode == 1


# --- bad input: exit 1, a clear message, nothing left ----------------------------------


def _bad_bundle(kind: str, bundle: BundleFactory, tmp_path: Path) -> tuple[Path, str]:
    """A bundle with one thing wrong, and what the error message must say."""
    if kind == "malformed-json":
        b = bundle(["true"])
        (b / "config.json").write_text((b / "config.json").read_text()[:100])
        return b, "config.json"
    if kind == "invalid-field":
        return bundle(["true"], process={"args": "true"}), "process.args"
    if kind == "missing-rootfs":
        missing = tmp_path / "no-rootfs"
        return bundle(["true"], root={"path": str(missing)}), str(missing)
    if kind == "missing-binary":
        return bundle(["/bin/nope"]), 'exec: "/bin/nope": no such file or directory'
    raise AssertionError(kind)


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize("kind", ["malformed-json", "invalid-field", "missing-rootfs", "missing-binary"])
def test_bad_bundle(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path, rootfs: Path,
                    cgroup_parent: str, command: str, kind: str) -> None:
    b, message = _bad_bundle(kind, bundle, tmp_path)
    r = cli(state_root, command, "-b", str(b), cid)
    assert r.returncode == 1
    assert message in error_text(r.stderr), r.stderr
    assert "Traceback" not in r.stderr
    # the bundle factory's cgroupsPath, which the malformed config.json no longer shows
    assert_no_leftovers(state_root, cid, f"/{cgroup_parent}/{cid}", rootfs=rootfs)
    assert [p.name for p in state_root.iterdir()] == []


def test_invalid_id(state_root: Path, bundle: BundleFactory, cid: str, rootfs: Path) -> None:
    b = bundle(["true"])
    r = cli(state_root, "create", "-b", str(b), "../x")
    assert r.returncode == 1
    assert "invalid" in r.stderr and "../x" in r.stderr
    assert not (state_root.parent / "x").exists()
    assert [p.name for p in state_root.iterdir()] == []
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), rootfs=rootfs)


@pytest.mark.parametrize("same_bundle", [True, False], ids=["same-bundle", "other-bundle"])
def test_existing_id(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper, same_bundle: bool) -> None:
    b = bundle(SLEEP)
    other = b if same_bundle else bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    before = state_of(state_root, cid)
    procs_before = {d: (d / "cgroup.procs").read_text() for d in cgroup_dirs(cgroups_path_of(b))}

    r = cli(state_root, "create", "-b", str(other), "--pid-file", str(other / "other.pid"), cid)
    assert r.returncode == 1
    assert "exists" in r.stderr and cid in r.stderr
    assert not (other / "other.pid").exists()

    # the existing container is untouched: same state, same init, still in its cgroups
    assert state_of(state_root, cid) == before
    assert {d: (d / "cgroup.procs").read_text() for d in cgroup_dirs(cgroups_path_of(b))} == procs_before
    if not same_bundle:
        assert [d for d in cgroup_dirs(cgroups_path_of(other)) if d.exists()] == []
    ok(cli(state_root, "start", cid))
    assert state_of(state_root, cid)["status"] == "running"
    force_delete(state_root, cid, reaper, pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


# --- start-up cost ---------------------------------------------------------------------


def _asyncio_imports(importtime_stderr: str) -> list[str]:
    names = [line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
             if line.startswith("import time:") and "|" in line]
    assert "aioruntime.cli.main" in names
    return [n for n in names if n == "asyncio" or n.startswith("asyncio.")]


def test_cli_does_not_import_asyncio(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    """Each command of a lifecycle, under ``python -X importtime -m aioruntime.cli``."""
    b = bundle(SLEEP)
    pid_file = b / "init.pid"
    pid = 0
    try:
        for args in (["create", "-b", str(b), "--pid-file", str(pid_file), cid], ["start", cid], ["state", cid],
                     ["list"], ["list", "-f", "json"], ["kill", cid, "KILL"], ["delete", "-f", cid]):
            r = _run([sys.executable, "-X", "importtime", "-m", "aioruntime.cli", "--root", str(state_root), *args])
            assert r.returncode == 0, (args, r.stderr)
            assert _asyncio_imports(r.stderr) == [], args
            if args[0] == "create":
                pid = reaper.track(int(pid_file.read_text()))
            elif args[0] == "state":
                assert json.loads(r.stdout)["status"] == "running"
    finally:
        if pid:
            cli(state_root, "delete", "-f", cid)
            reaper.wait(pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


# --- features ----------------------------------------------------------------------------


def test_features_has_runcs_shape_and_lists_what_is_implemented(tmp_path: Path) -> None:
    """``features`` (runc 1.1+): the OCI features document, its lists taken from the code."""
    from aioruntime.plan import MOUNT_FLAGS, PROPAGATION
    from aioruntime.seccomp import ACTIONS
    from aioruntime.spec.names import CAPABILITIES

    doc = json.loads(ok(cli(None, "features")).stdout)
    if RUNC:
        theirs = runc(tmp_path / "runc-root", "features")
        if theirs.returncode == 0:  # runc 1.1+
            ref = json.loads(theirs.stdout)
            assert set(ref) <= set(doc) | {"potentiallyUnsafeConfigAnnotations"}
            assert set(ref["linux"]) - {"intelRdt", "memoryPolicy", "mountExtensions", "netDevices"} <= set(doc["linux"])
            assert set(ref["linux"]["seccomp"]) <= set(doc["linux"]["seccomp"])
            assert set(ref["hooks"]) == set(doc["hooks"])
    assert (doc["ociVersionMin"], doc["ociVersionMax"]) == ("1.0.0", "1.0.2-dev")
    assert doc["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    assert doc["mountOptions"] == sorted({*MOUNT_FLAGS, *PROPAGATION}) and "rbind" in doc["mountOptions"]
    linux = doc["linux"]
    assert linux["namespaces"] == ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]
    assert linux["capabilities"] == list(CAPABILITIES)
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": True}
    seccomp = linux["seccomp"]
    assert seccomp["enabled"] and set(seccomp["actions"]) == set(ACTIONS) and "SCMP_ACT_NOTIFY" not in seccomp["actions"]
    assert "SCMP_CMP_MASKED_EQ" in seccomp["operators"] and "SCMP_ARCH_X86_64" in seccomp["archs"]
    assert linux["apparmor"] == {"enabled": False} and linux["selinux"] == {"enabled": False}
    assert re.fullmatch(r"\d+\.\d+\.\d+", doc["annotations"]["io.github.seccomp.libseccomp.version"])
    assert cli(None, "features", "extra").returncode == 1


# --- what container managers pass to create and run --------------------------------------


def test_containerd_delete_then_delete_force(state_root: Path, bundle: BundleFactory, cid: str,
                                             reaper: Reaper) -> None:
    """containerd's shim deletes a stopped container, then deletes it again with --force:
    the second call, on an id that is gone, exits 0."""
    b = bundle(["true"])
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "start", cid))
    assert reaper.wait(pid) == 0
    ok(cli(state_root, "--log", str(b / "log.json"), "--log-format", "json", "delete", cid))
    ok(cli(state_root, "--log", str(b / "log.json"), "--log-format", "json", "delete", "--force", cid))
    assert not (b / "log.json").exists()  # nothing to report
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


@pytest.mark.parametrize("command", ["create", "run"])
def test_preserve_fds_passes_fds_3_on(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                      command: str) -> None:
    """``--preserve-fds 2``: the caller's fds 3 and 4 are the container process's 3 and 4;
    fd 5, open in the caller too, is not passed."""
    b = bundle(["sh", "-c", "echo three >&3; echo four >&4; (echo five >&5) 2>/dev/null || echo no-five >&3"])
    pipes = []
    for _ in range(3):  # the write ends above 100, clear of the fds the script moves them to
        r, w = os.pipe()
        pipes.append((r, fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 100)))
        os.close(w)
    pid_file = b / "init.pid"
    extra = "-d" if command == "run" else ""
    moves = " ".join(f"{fd}>&{w} {w}>&-" for fd, (_, w) in zip((3, 4, 5), pipes))
    script = (f"exec {moves}; exec {AIORUNTIME} --root {state_root} {command} {extra} --preserve-fds 2 "
              f"-b {b} --pid-file {pid_file} {cid}")
    try:
        with tempfile.TemporaryFile() as err:
            code = subprocess.run(["bash", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, pass_fds=[w for _, w in pipes], timeout=TIMEOUT, check=False).returncode
            err.seek(0)
            assert code == 0, err.read()
        pid = reaper.track(int(pid_file.read_text()))
        for _, w in pipes:
            os.close(w)
        if command == "create":
            ok(cli(state_root, "start", cid))
        assert reaper.wait(pid) == 0
        assert [os.read(r, 100) for r, _ in pipes] == [b"three\nno-five\n", b"four\n", b""]
    finally:
        for r, w in pipes:
            os.close(r)
            with contextlib.suppress(OSError):
                os.close(w)
    ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


@pytest.mark.parametrize("no_new_keyring", [False, True])
def test_session_keyring(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                         no_new_keyring: bool) -> None:
    """As runc, the init joins a new session keyring ``_ses.<id>`` (so a container does not
    share the caller's); ``--no-new-keyring`` keeps the caller's."""
    masked = [p for p in config_of(bundle(["true"]))["linux"]["maskedPaths"] if p != "/proc/keys"]
    b = bundle(["cat", "/proc/keys"], linux={"maskedPaths": masked})
    pid, out = create_piped(state_root, b, cid, reaper, *(["--no-new-keyring"] if no_new_keyring else []))
    with out:
        ok(cli(state_root, "start", cid))
        assert reaper.wait(pid) == 0
        keys = out.read().decode()
    ok(cli(state_root, "delete", cid))
    ours = [line for line in keys.splitlines() if line.endswith(f" _ses.{cid}: empty")]
    if no_new_keyring:
        assert ours == [], keys
    else:
        assert len(ours) == 1 and " perm 3f1b0000 " in ours[0], keys  # runc's: + search for the uid
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


def _pidfd_listener(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    return listener


def _receive_pidfd(listener: socket.socket) -> tuple[bytes, int]:
    """The one message a --pidfd-socket gets: its text and the pidfd attached."""
    conn, _ = listener.accept()
    with conn:
        msg, fds, _, _ = socket.recv_fds(conn, 64, 1)
    assert len(fds) == 1
    return msg, fds[0]


@needs_runc
def test_socket_nobody_listens_on_is_runcs_error(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path) -> None:
    """Go's dial error, which managers show: the same tail as runc's, and nothing left."""
    b = bundle(SLEEP, process={"terminal": True})
    nobody = str(tmp_path / "nobody")
    ours = cli(state_root, "create", "--console-socket", nobody, "-b", str(b), cid)
    theirs = runc(tmp_path / "runc-root", "create", "--console-socket", nobody, "-b", str(b), cid)
    tail = f"dial unix {nobody}: connect: no such file or directory"
    assert ours.returncode == theirs.returncode == 1
    assert error_text(ours.stderr).endswith(tail) and error_text(theirs.stderr).endswith(tail)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


@pytest.mark.parametrize("command", ["create", "run"])
def test_pidfd_socket(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper, tmp_path: Path,
                      command: str) -> None:
    """runc 1.2's --pidfd-socket: one message "standard" carrying a pidfd of the init, which
    the manager can signal; a socket nobody listens on fails the call and leaves nothing."""
    b = bundle(SLEEP)
    extra = ["-d"] if command == "run" else []
    r = cli(state_root, command, *extra, "--pidfd-socket", str(tmp_path / "nobody"), "-b", str(b), cid)
    assert r.returncode == 1 and "pidfd socket" in error_text(r.stderr)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))
    with _pidfd_listener(tmp_path / "pidfd.sock") as listener:
        ok(cli(state_root, command, *extra, "--pidfd-socket", str(tmp_path / "pidfd.sock"), "-b", str(b),
               "--pid-file", str(tmp_path / "pid"), cid))
        pid = reaper.track(int((tmp_path / "pid").read_text()))
        msg, pidfd = _receive_pidfd(listener)
    try:
        assert msg == b"standard"
        assert os.readlink(f"/proc/self/fdinfo/{pidfd}".replace("fdinfo", "fd")) == "anon_inode:[pidfd]"
        fdinfo = dict(line.split(":\t", 1) for line in Path(f"/proc/self/fdinfo/{pidfd}").read_text().splitlines())
        assert int(fdinfo["Pid"]) == pid
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)
    assert reaper.wait(pid) == -signal.SIGKILL
    assert state_of(state_root, cid)["status"] == "stopped"
    ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


def test_exec_pidfd_socket(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper, tmp_path: Path) -> None:
    """``exec --pidfd-socket``: "setns" and a pidfd of the exec'd process."""
    b = bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    try:
        ok(cli(state_root, "start", cid))
        with _pidfd_listener(tmp_path / "pidfd.sock") as listener:
            ok(cli(state_root, "exec", "-d", "--pidfd-socket", str(tmp_path / "pidfd.sock"), "--pid-file",
                   str(tmp_path / "exec.pid"), cid, "sleep", "1000"))
            msg, pidfd = _receive_pidfd(listener)
        exec_pid = reaper.track(int((tmp_path / "exec.pid").read_text()))
        try:
            assert msg == b"setns"
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            os.close(pidfd)
        assert reaper.wait(exec_pid) == -signal.SIGKILL
    finally:
        force_delete(state_root, cid, reaper, pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)
