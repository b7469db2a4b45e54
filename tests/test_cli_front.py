"""The compiled front end (aioruntime/cli/front.c) against the Python CLI it stands in for.

``state``, ``start``, ``kill`` and ``delete`` run in C on their common path; everything
else, and every case the C side does not handle, execs Python. These tests hold each fast
answer to the Python one on the same container, and check which side answered: a
``sitecustomize`` on PYTHONPATH leaves a mark whenever Python starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of
from test_cli import SLEEP, TIMEOUT, Reaper, Result, create, reaper  # noqa: F401 - reaper is a fixture

PYTHON_CLI = [sys.executable, "-c", "from aioruntime.cli.main import main; main()"]


class Front:
    """Runs the installed command and tells whether Python started for it; every command
    under ``wrap`` when given (e.g. in a mount namespace of its own)."""

    def __init__(self, root: Path, marks: Path, wrap: Sequence[str] = ()) -> None:
        self.root, self.marks, self.wrap = root, marks, list(wrap)
        (marks / "sitecustomize.py").write_text(
            "import os\nopen(os.path.join(os.path.dirname(__file__), 'started'), 'a').write('x')\n"
        )
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(marks), os.environ.get("PYTHONPATH")])))

    def _run(self, argv: list[str], env: dict[str, str] | None) -> Result:
        """Output into files: a container created here inherits them, and a pipe would stay open."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run([*self.wrap, *argv], stdout=out, stderr=err, timeout=TIMEOUT, check=False, env=env,
                               stdin=subprocess.DEVNULL)
            out.seek(0)
            err.seek(0)
            return Result(p.returncode, out.read().decode(), err.read().decode())

    def fast(self, *args: str) -> Result:
        """The installed command; fails the test if it started Python."""
        started = self.marks / "started"
        started.unlink(missing_ok=True)
        result = self._run([AIORUNTIME, "--root", str(self.root), *args], self.env)
        assert not started.exists(), f"{args}: Python ran"
        return result

    def fallback(self, *args: str) -> Result:
        """The installed command; fails the test unless it handed over to Python."""
        started = self.marks / "started"
        started.unlink(missing_ok=True)
        result = self._run([AIORUNTIME, "--root", str(self.root), *args], self.env)
        assert started.exists(), f"{args}: Python did not run"
        return result

    def python(self, *args: str) -> Result:
        return self._run([*PYTHON_CLI, "--root", str(self.root), *args], None)


@pytest.fixture
def front(state_root: Path, tmp_path: Path) -> Iterator[Front]:
    marks = tmp_path / "marks"
    marks.mkdir()
    yield Front(state_root, marks)


def test_state_is_python_s_in_every_status(front: Front, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    b = bundle(SLEEP)
    pid = create(front.root, b, cid, reaper)

    def same(status: str) -> None:
        fast, slow = front.fast("state", cid), front.python("state", cid)
        assert (fast.returncode, fast.stdout) == (0, slow.stdout)
        assert json.loads(fast.stdout)["status"] == status

    same("created")
    assert front.fast("start", cid).returncode == 0
    same("running")
    assert front.python("pause", cid).returncode == 0
    same("paused")
    assert front.python("resume", cid).returncode == 0
    same("running")
    assert front.fast("kill", cid, "KILL").returncode == 0
    reaper.wait(pid)
    same("stopped")
    assert front.fast("delete", cid).returncode == 0
    assert_no_leftovers(front.root, cid, cgroups_path_of(b), pid=pid)


@pytest.mark.parametrize("signal", ["9", "KILL", "SIGKILL", "sigkill"])
def test_kill_by_name_or_number(front: Front, bundle: BundleFactory, cid: str, reaper: Reaper, signal: str) -> None:
    b = bundle(SLEEP)
    pid = create(front.root, b, cid, reaper)
    assert front.fast("start", cid).returncode == 0
    assert front.fast("kill", cid, signal).returncode == 0
    reaper.wait(pid)
    assert json.loads(front.fast("state", cid).stdout)["status"] == "stopped"
    assert front.fast("delete", cid).returncode == 0
    assert_no_leftovers(front.root, cid, cgroups_path_of(b), pid=pid)


def test_kill_all_reaches_every_process(front: Front, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    """And ``ps --format json`` (containerd's shim) lists them as Python does; its table runs ps(1) in Python."""
    b = bundle(["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    pid = create(front.root, b, cid, reaper)
    assert front.fast("ps", "--format", "json", cid).stdout == front.python("ps", "-f", "json", cid).stdout == f"[{pid}]\n"
    assert front.fast("start", cid).returncode == 0
    listed = front.fast("ps", "-f=json", cid)
    assert listed == front.python("ps", "--format=json", cid) and len(json.loads(listed.stdout)) == 3
    table = front.fallback("ps", cid).stdout.splitlines()
    assert table[0].split()[1] == "PID" and len(table) == 4  # the header, sh and its two sleeps
    assert front.fast("kill", "--all", cid, "KILL").returncode == 0
    reaper.wait(pid)
    assert front.fast("delete", cid).returncode == 0
    assert_no_leftovers(front.root, cid, cgroups_path_of(b), pid=pid)


@pytest.mark.parametrize("status", ["created", "running", "paused"])
def test_delete_force_leaves_nothing(front: Front, bundle: BundleFactory, cid: str, reaper: Reaper, status: str) -> None:
    b = bundle(SLEEP)
    pid = create(front.root, b, cid, reaper)
    if status != "created":
        assert front.fast("start", cid).returncode == 0
    if status == "paused":
        assert front.python("pause", cid).returncode == 0
    assert front.fast("delete", "--force", cid).returncode == 0
    reaper.wait(pid)
    assert_no_leftovers(front.root, cid, cgroups_path_of(b), pid=pid)


def test_delete_force_of_an_unknown_container_succeeds_quietly(front: Front) -> None:
    assert front.fast("delete", "-f", "no-such-container") == Result(0, "", "")


def test_errors_are_python_s(front: Front, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    """Unknown containers and wrong statuses are worded by the Python CLI."""
    for args in (("state", "nope"), ("start", "nope"), ("kill", "nope"), ("delete", "nope")):
        fast, slow = front.fallback(*args), front.python(*args)
        assert fast.returncode == slow.returncode == 1
        assert fast.stderr.split("msg=")[1] == slow.stderr.split("msg=")[1]
    b = bundle(SLEEP)
    pid = create(front.root, b, cid, reaper)
    assert front.fast("start", cid).returncode == 0
    refused = front.fallback("delete", cid)  # running: --force needed
    assert refused.returncode == 1 and "running" in refused.stderr
    assert front.fallback("start", cid).returncode == 1
    assert front.fast("delete", "-f", cid).returncode == 0
    reaper.wait(pid)
    assert_no_leftovers(front.root, cid, cgroups_path_of(b), pid=pid)


def test_hooks_and_unusual_flags_go_to_python(front: Front, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    b = bundle(SLEEP, hooks={"poststop": [{"path": "/bin/true"}]})
    pid = create(front.root, b, cid, reaper)
    assert front.fast("state", cid).returncode == 0
    assert front.fallback("--debug=true", "state", cid).returncode == 0
    assert front.fallback("state", "--help").returncode == 0
    assert front.fallback("delete", "--force", cid).returncode == 0  # Python runs the hook
    reaper.wait(pid)
    assert_no_leftovers(front.root, cid, cgroups_path_of(b), pid=pid)


BUSY = ["sh", "-c", "while :; do :; done"]  # always runnable (R) unless frozen


def _task_state(pid: int) -> str:
    """The State letter of /proc/PID/status: R running, D or S once frozen."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("State:"))
    return line.split()[1]


def _cgroup2_freezer(front: Front) -> Front:
    """``front`` with each command in a mount namespace without the cgroup v1 freezer
    hierarchy, so that the freezer is cgroup2's (skips when the host has not both)."""
    from aioruntime.cgroups.mounts import hierarchies

    v1 = [h.mountpoint for h in hierarchies() if h.version == 1 and "freezer" in h.controllers]
    if not v1 or not any(h.version == 2 for h in hierarchies()):
        pytest.skip("needs both a cgroup v1 freezer hierarchy and cgroup2")
    unmount = 'umount "$0" && exec "$@"'
    return Front(front.root, front.marks, ["unshare", "-m", "--propagation", "private", "sh", "-c", unmount, v1[0]])


@pytest.mark.parametrize("started", [False, True], ids=["created", "running"])
@pytest.mark.parametrize("freezer", ["host", "cgroup2"])
def test_pause_and_resume_in_c(
    front: Front, bundle: BundleFactory, cid: str, reaper: Reaper, started: bool, freezer: str
) -> None:
    if freezer == "cgroup2":
        front = _cgroup2_freezer(front)
    b = bundle(BUSY)
    pid_file = b / "init.pid"
    assert front.python("create", "-b", str(b), "--pid-file", str(pid_file), cid).returncode == 0
    pid = reaper.track(int(pid_file.read_text()))
    before = "running" if started else "created"
    if started:
        assert front.fast("start", cid).returncode == 0
        assert _task_state(pid) == "R"
    state_dir = front.root / cid
    os.utime(state_dir, (0, 0))
    assert front.fast("pause", cid) == Result(0, "", "")
    assert state_dir.stat().st_mtime > 0  # touched: event watchers learn the status changed
    assert json.loads(front.fast("state", cid).stdout)["status"] == "paused"
    assert json.loads(front.python("state", cid).stdout)["status"] == "paused"
    assert _task_state(pid) in ("D", "S")  # v1 freezer: D; cgroup2: S
    if freezer == "cgroup2":
        paths = json.loads((state_dir / "state.json").read_text())["cgroup_paths"].values()
        assert [Path(d, "cgroup.freeze").read_text() for d in paths if Path(d, "cgroup.freeze").exists()] == ["1\n"]
    os.utime(state_dir, (0, 0))
    assert front.fast("resume", cid) == Result(0, "", "")
    assert state_dir.stat().st_mtime > 0
    assert json.loads(front.fast("state", cid).stdout)["status"] == before
    if started:
        assert _task_state(pid) == "R"
    assert front.fast("delete", "-f", cid).returncode == 0
    reaper.wait(pid)
    assert_no_leftovers(front.root, cid, cgroups_path_of(b), pid=pid)


def test_freeze_refusals_are_python_s(front: Front, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    """An unknown container or a status that does not allow it: Python words it, before any change."""

    def same(*args: str) -> str:
        fast, slow = front.fallback(*args), front.python(*args)
        assert fast.returncode == slow.returncode == 1
        assert fast.stderr.split("msg=")[1] == slow.stderr.split("msg=")[1]
        return fast.stderr

    same("pause", "nope")
    same("resume", "nope")
    b = bundle(SLEEP)
    pid = create(front.root, b, cid, reaper)
    assert "container not paused" in same("resume", cid)
    assert json.loads(front.fast("state", cid).stdout)["status"] == "created"
    assert front.fast("pause", cid).returncode == 0
    assert "container not running" in same("pause", cid)
    assert json.loads(front.fast("state", cid).stdout)["status"] == "paused"
    assert front.fast("kill", cid, "KILL").returncode == 0
    reaper.wait(pid)
    assert "container not running" in same("pause", cid)
    assert "container not paused" in same("resume", cid)
    assert front.fallback("pause", "--help").returncode == 0
    assert front.fast("delete", cid).returncode == 0
    assert_no_leftovers(front.root, cid, cgroups_path_of(b), pid=pid)


LIST_FORMATS = [(), ("-q",), ("--quiet",), ("--format", "json"), ("-f", "json"), ("--format=json",), ("-f", "table")]


def _same_list(front: Front) -> list[str]:
    """Each list format from C and from Python, byte for byte; the ids listed."""
    for flags in LIST_FORMATS:
        assert front.fast("list", *flags) == front.python("list", *flags), flags
    return front.fast("list", "-q").stdout.split()


def test_list_is_python_s(front: Front, bundle: BundleFactory, cid: str, reaper: Reaper, tmp_path: Path) -> None:
    assert _same_list(Front(front.root / "missing", tmp_path / "marks")) == []
    assert _same_list(front) == []
    b1, b2 = bundle(SLEEP), bundle(SLEEP)
    first, second = cid, cid + "-b"
    pid1 = create(front.root, b1, first, reaper)
    assert _same_list(front) == [first]
    pid2 = create(front.root, b2, second, reaper)
    assert front.fast("start", first).returncode == 0
    assert front.fast("pause", second).returncode == 0
    assert _same_list(front) == [first, second]  # running, paused
    assert front.fast("resume", second).returncode == 0
    assert front.fast("kill", first, "KILL").returncode == 0
    reaper.wait(pid1)
    assert "stopped" in front.fast("list").stdout
    assert _same_list(front) == [first, second]  # stopped (pid 0), created
    for c in (first, second):
        assert front.fast("delete", "-f", c).returncode == 0
    reaper.wait(pid2)
    assert _same_list(front) == []
    assert_no_leftovers(front.root, first, cgroups_path_of(b1), pid=pid1)
    assert_no_leftovers(front.root, second, cgroups_path_of(b2), pid=pid2)


def test_list_hands_python_what_it_does_not_print(front: Front, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    """Annotations are printed nested in JSON: Python's; the table has no column for them."""
    b = bundle(SLEEP, annotations={"org.example/key": "value"})
    pid = create(front.root, b, cid, reaper)
    assert front.fast("list") == front.python("list")
    fast, slow = front.fallback("list", "-f", "json"), front.python("list", "-f", "json")
    assert fast == slow and json.loads(fast.stdout)[0]["annotations"] == {"org.example/key": "value"}
    assert front.fallback("list", "--format", "yaml") == front.python("list", "--format", "yaml")
    assert front.fallback("list", "--quiet=true").stdout == cid + "\n"
    assert front.fast("delete", "-f", cid).returncode == 0
    reaper.wait(pid)
    assert_no_leftovers(front.root, cid, cgroups_path_of(b), pid=pid)
