"""``aioruntime exec``, ``ps`` and terminals (``-t``, ``--console-socket``, ``process.terminal``)
on the command line, on the real kernel, held against runc where it is installed: the same
bundle gives the same output, exit status and error messages.

As in test_cli.py the ``reaper`` fixture makes this process the subreaper that conmon or
containerd-shim would be, so inits and detached processes the CLI leaves are reaped here.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AIORUNTIME, BundleFactory, ConsoleSocket, assert_no_leftovers, cgroups_path_of, read_until
from test_cli import (  # noqa: F401 - reaper is a fixture
    TIMEOUT,
    Reaper,
    cli,
    copy_bundle,
    create,
    error_text,
    force_delete,
    needs_runc,
    ok,
    reaper,
    runc,
)

from aioruntime.cli.foreground import FORWARDED, Forwarder
from tools.cgroup_tree import cgroup_dirs

SLEEP = ["sleep", "1000"]
PROMPT = b"/ # "


class Running:
    """A started container made by the CLI, and with runc the same bundle run by runc."""

    def __init__(self, root: Path, bundle: Path, cid: str, reaper: Reaper, tmp_path: Path, with_runc: bool) -> None:
        self.root, self.bundle, self.cid, self.reaper = root, bundle, cid, reaper
        self.pid = create(root, bundle, cid, reaper)
        ok(cli(root, "start", cid))
        self.runc_root = tmp_path / "runc-root"
        self.runc_pid = 0
        if with_runc:
            rb = copy_bundle(bundle, tmp_path / "runc-bundle", cgroups_path_of(bundle) + "-runc")
            ok(runc(self.runc_root, "run", "-d", "-b", str(rb), cid))
            self.runc_pid = reaper.track(json.loads(ok(runc(self.runc_root, "state", cid)).stdout)["pid"])

    def both(self, *args: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        """``args`` through us and through runc: (exit status, stdout, error message) each."""
        ours, theirs = cli(self.root, *args), runc(self.runc_root, *args)
        return ((ours.returncode, ours.stdout, error_text(ours.stderr)),
                (theirs.returncode, theirs.stdout, error_text(theirs.stderr)))

    def close(self) -> None:
        force_delete(self.root, self.cid, self.reaper, self.pid)
        assert_no_leftovers(self.root, self.cid, cgroups_path_of(self.bundle), pid=self.pid)
        if self.runc_pid:
            runc(self.runc_root, "delete", "-f", self.cid)
            self.reaper.wait(self.runc_pid)


@pytest.fixture
def running(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper, tmp_path: Path) -> Iterator[Running]:
    r = Running(state_root, bundle(SLEEP), cid, reaper, tmp_path, with_runc=False)
    yield r
    r.close()


@pytest.fixture
def running_both(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper, tmp_path: Path) -> Iterator[Running]:
    r = Running(state_root, bundle(SLEEP), cid, reaper, tmp_path, with_runc=True)
    yield r
    r.close()


def on_pty(argv: list[str], rows: int = 24, cols: int = 80) -> tuple[int, int]:
    """Start ``argv`` on a new pty of the given size, as a person's shell would: (pid, master)."""
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return pid, master


def finish_on_pty(pid: int, master: int) -> tuple[bytes, int]:
    """Everything left on the pty, and the exit status of the program on it."""
    out = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and select.select([master], [], [], deadline - time.monotonic())[0]:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the program and everything on the pty exited
            break
        if not data:
            break
        out += data
    os.close(master)
    for _ in range(int(TIMEOUT * 100)):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return out, os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"{pid} did not exit; it wrote {out!r}")


# --- exec: output, status, flags, as runc ------------------------------------------------


@needs_runc
def test_output_and_status_as_runc(running_both: Running) -> None:
    ours, theirs = running_both.both("exec", running_both.cid, "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert ours[:2] == theirs[:2] == (3, "hi\n")


@needs_runc
def test_flags_as_runc(running_both: Running) -> None:
    script = "id -u; id -g; id -G; pwd; echo $FOO $TERM; env | grep -c TERM; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"
    args = ("exec", "-e", "FOO=bar", "-e", "TERM=dumb", "--cwd", "/tmp", "-u", "1000:1000", "-g", "5",
            "--cap", "CAP_SYS_ADMIN", "--cap", "CAP_CHOWN", "--no-new-privs=false", running_both.cid, "sh", "-c", script)
    ours, theirs = running_both.both(*args)
    assert ours == theirs
    assert ours[1].startswith("1000\n1000\n1000 5\n/tmp\nbar dumb\n1\n")


@needs_runc
def test_process_json_as_runc(running_both: Running, tmp_path: Path) -> None:
    process = {"args": ["sh", "-c", "echo $X; pwd; id"], "cwd": "/proc", "env": ["X=y", "PATH=/bin"],
               "user": {"uid": 1000, "gid": 1000}, "terminal": False}
    (tmp_path / "process.json").write_text(json.dumps(process))
    ours, theirs = running_both.both("exec", "-p", str(tmp_path / "process.json"), running_both.cid)
    assert ours == theirs == (0, "y\n/proc\nuid=1000(user) gid=1000(user)\n", "")


@needs_runc
@pytest.mark.parametrize(
    "args",
    [
        ["nosuch"],  # exec: "nosuch": executable file not found in $PATH
        ["/etc"],  # exec: "/etc": permission denied
        [],  # process args cannot be empty
        ["-d", "-t", "{cid}", "sh"],  # cannot allocate tty if runc will detach without setting console socket
        ["--console-socket", "/nonexistent", "{cid}", "sh"],  # cannot use console socket if ... not detach
    ],
)
def test_errors_as_runc(running_both: Running, args: list[str]) -> None:
    words = [a.format(cid=running_both.cid) for a in args] if "{cid}" in args else [running_both.cid, *args]
    ours, theirs = running_both.both("exec", *words)
    assert ours == theirs and ours[0] == 255 and ours[2].startswith("exec failed: ")


def test_words_after_the_command_are_its_own(running: Running) -> None:
    r = ok(cli(running.root, "exec", running.cid, "sh", "-c", 'echo "$@"', "sh", "-t", "--cwd", "x"))
    assert r.stdout == "-t --cwd x\n"


def test_exec_into_created_stopped_or_unknown_container(state_root: Path, bundle: BundleFactory, cid: str,
                                                        reaper: Reaper) -> None:
    b = bundle(["true"])
    pid = create(state_root, b, cid, reaper)
    assert ok(cli(state_root, "exec", cid, "echo", "created")).stdout == "created\n"  # as runc
    ok(cli(state_root, "start", cid))
    assert reaper.wait(pid) == 0
    r = cli(state_root, "exec", cid, "true")
    assert r.returncode == 255 and "it is stopped" in r.stderr
    ok(cli(state_root, "delete", cid))
    r = cli(state_root, "exec", cid, "true")
    assert r.returncode == 255 and "container does not exist" in r.stderr
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


# --- detached, pid file, preserved fds ------------------------------------------------------


def test_detach_and_pid_file(running: Running, tmp_path: Path) -> None:
    pid_file = tmp_path / "exec.pid"
    r = ok(cli(running.root, "exec", "-d", "--pid-file", str(pid_file), running.cid, "sleep", "1000"))
    assert r.stdout == ""
    text = pid_file.read_text()
    assert text.isdigit()  # decimal, no newline
    pid = running.reaper.track(int(text))  # orphaned to us, its subreaper
    for name in ("ipc", "uts", "net", "pid", "mnt"):
        assert os.readlink(f"/proc/{pid}/ns/{name}") == os.readlink(f"/proc/{running.pid}/ns/{name}")
    assert Path(f"/proc/{pid}/cgroup").read_text() == Path(f"/proc/{running.pid}/cgroup").read_text()
    assert json.loads(ok(cli(running.root, "ps", "-f", "json", running.cid)).stdout) == sorted([running.pid, pid])
    os.kill(pid, signal.SIGTERM)
    assert running.reaper.wait(pid) == -signal.SIGTERM


def test_preserve_fds(running: Running, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = f"exec 3>{out}; {AIORUNTIME} --root {running.root} exec --preserve-fds 1 {running.cid} sh -c 'echo via3 >&3'"
    assert subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, timeout=TIMEOUT, check=False).returncode == 0
    assert out.read_text() == "via3\n"
    command = f"exec 3>{out}; {AIORUNTIME} --root {running.root} exec {running.cid} sh -c 'echo via3 >&3'"
    r = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, check=False)
    assert r.returncode != 0 and b"Bad file descriptor" in r.stderr  # not passed without the flag


# --- the foreground: signals, status ------------------------------------------------------


def test_foreground_exec_forwards_signals(running: Running) -> None:
    proc = subprocess.Popen(
        [AIORUNTIME, "--root", str(running.root), "exec", running.cid,
         "sh", "-c", 'trap "exit 7" TERM; echo ready; while :; do sleep 0.05; done'],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 7


def test_signals_before_the_process_runs_are_held_then_forwarded() -> None:
    # the CLI's handlers are in place before the process starts: a SIGTERM in between must
    # not end the CLI (its process would be left to the subreaper, unreaped)
    saved = {sig: signal.getsignal(sig) for sig in FORWARDED}
    r, w = os.pipe()
    try:
        signals = Forwarder()
        os.kill(os.getpid(), signal.SIGUSR1)  # handled here at once: held
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", 'trap "exit 5" USR1; echo ready; while :; do sleep 0.05; done'],
                             os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)])
        os.close(w)
        assert os.read(r, 6) == b"ready\n"  # its trap is set
        pidfd = os.pidfd_open(pid)
        try:
            assert signals.wait(pidfd) == 5
        finally:
            os.close(pidfd)
    finally:
        os.close(r)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_foreground_exit_status_of_a_signal(running: Running) -> None:
    assert cli(running.root, "exec", running.cid, "sh", "-c", "kill -9 $$").returncode == 128 + signal.SIGKILL


# --- terminals -------------------------------------------------------------------------------


def test_exec_tty_on_a_console_socket(running: Running, tmp_path: Path) -> None:
    console = ConsoleSocket(tmp_path)
    try:
        pid_file = tmp_path / "exec.pid"
        ok(cli(running.root, "exec", "-d", "-t", "--console-socket", console.path, "--pid-file", str(pid_file),
               running.cid, "sh"))
        pid = running.reaper.track(int(pid_file.read_text()))
        msg, master = console.receive()
        try:
            assert msg == b"/dev/ptmx"
            read_until(master, PROMPT)
            os.write(master, b"tty; exit 4\n")
            read_until(master, b"/dev/pts/0")
            assert running.reaper.wait(pid) == 4  # before we hang up the terminal (SIGHUP)
        finally:
            os.close(master)
    finally:
        console.close()


def test_create_with_a_console_socket(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                      tmp_path: Path) -> None:
    b = bundle(["sh"], process={"terminal": True})
    console = ConsoleSocket(tmp_path)
    try:
        pid = create(state_root, b, cid, reaper, "--console-socket", console.path)
        msg, master = console.receive()  # at create: the manager holds it before start
        try:
            ok(cli(state_root, "start", cid))
            read_until(master, PROMPT)
            os.write(master, b"stat -c %t,%T /dev/console; exit 2\n")
            read_until(master, b"88,0")  # /dev/console is the container's pty 0
            assert reaper.wait(pid) == 2
        finally:
            os.close(master)
        ok(cli(state_root, "delete", cid))
        assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)
    finally:
        console.close()


def test_detached_terminal_needs_a_console_socket(state_root: Path, bundle: BundleFactory, cid: str) -> None:
    b = bundle(["sh"], process={"terminal": True})
    r = cli(state_root, "create", "-b", str(b), cid)
    assert (r.returncode, error_text(r.stderr)) == (
        1, "cannot allocate tty if runc will detach without setting console socket")
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


def test_run_in_the_foreground_on_a_terminal(state_root: Path, bundle: BundleFactory, cid: str) -> None:
    b = bundle(["sh"], process={"terminal": True})
    pid, master = on_pty([AIORUNTIME, "--root", str(state_root), "run", "-b", str(b), cid], 33, 111)
    try:
        read_until(master, PROMPT)
        os.write(master, b"stty size\n")  # our window's size, passed on
        read_until(master, b"33 111\r\n")
        # a new size: the kernel sends the CLI SIGWINCH, the CLI passes the size on
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 44, 122, 0, 0))
        time.sleep(0.2)
        os.write(master, b"stty size; exit 9\n")
        read_until(master, b"44 122\r\n")
    finally:
        out, status = finish_on_pty(pid, master)
    assert status == 9
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


def test_exec_in_the_foreground_on_a_terminal(running: Running) -> None:
    pid, master = on_pty([AIORUNTIME, "--root", str(running.root), "exec", "-t", running.cid, "sh"], 20, 70)
    try:
        read_until(master, PROMPT)
        os.write(master, b"stty size; tty; exit 5\n")
        read_until(master, b"20 70\r\n/dev/pts/0\r\n")
    finally:
        out, status = finish_on_pty(pid, master)
    assert status == 5


# --- ps ----------------------------------------------------------------------------------------


def test_ps_of_a_container_with_several_processes(state_root: Path, bundle: BundleFactory, cid: str,
                                                  reaper: Reaper) -> None:
    b = bundle(["sh", "-c", "sleep 1000 & sleep 1000 & echo up; wait"])
    pid = create(state_root, b, cid, reaper)
    try:
        ok(cli(state_root, "start", cid))
        ok(cli(state_root, "exec", "-d", cid, "sleep", "1000"))  # a fourth, orphaned to the subreaper
        procs = cgroup_dirs(cgroups_path_of(b))[0] / "cgroup.procs"
        deadline = time.monotonic() + TIMEOUT
        while len(pids := sorted(int(p) for p in procs.read_text().split())) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(pids) == 4 and pid in pids
        reaper.pids.update(p for p in pids if f"PPid:\t{os.getpid()}\n" in Path(f"/proc/{p}/status").read_text())
        r = ok(cli(state_root, "ps", "--format", "json", cid))
        assert r.stdout == json.dumps(pids, separators=(",", ":")) + "\n"  # a bare array, as runc's

        table = ok(cli(state_root, "ps", cid)).stdout.splitlines()
        ps_ef = subprocess.run(["ps", "-ef"], capture_output=True, text=True, check=True).stdout.splitlines()
        assert table[0] == ps_ef[0]  # ps -ef's own header
        assert sorted(int(line.split()[1]) for line in table[1:]) == pids
        r = cli(state_root, "ps", cid, "-o", "pid=,comm=")  # no header
        assert (r.returncode, error_text(r.stderr)) == (1, "couldn't find PID field in ps output")
        custom = ok(cli(state_root, "ps", cid, "-o", "pid,comm")).stdout.splitlines()
        assert custom[0].split() == ["PID", "COMMAND"]
        assert sorted((int(p), c) for p, c in (line.split() for line in custom[1:])) == sorted(
            (p, "sh" if p == pid else "sleep") for p in pids)
    finally:
        # the exec'd sleep is ours to reap (we are its subreaper): the init, pid 1 of its
        # namespace, finishes exiting only once it is reaped, and delete waits for the init
        for p in reaper.pids - {pid}:
            os.kill(p, signal.SIGKILL)
            reaper.wait(p)
        force_delete(state_root, cid, reaper, pid)
    r = cli(state_root, "ps", "-f", "json", cid)
    assert (r.returncode, error_text(r.stderr)) == (1, f"container does not exist: {cid}")
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


def test_ps_of_a_stopped_container_and_bad_format(state_root: Path, bundle: BundleFactory, cid: str,
                                                  reaper: Reaper) -> None:
    b = bundle(["true"])
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "start", cid))
    assert reaper.wait(pid) == 0
    assert ok(cli(state_root, "ps", "-f", "json", cid)).stdout == "null\n"  # Go's nil slice, as runc
    r = cli(state_root, "ps", "-f", "xml", cid)
    assert (r.returncode, error_text(r.stderr)) == (1, "invalid format option")
    ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)
