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
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of
from test_cli import SLEEP, TIMEOUT, Reaper, Result, create, reaper  # noqa: F401 - reaper is a fixture

PYTHON_CLI = [sys.executable, "-c", "from aioruntime.cli.main import main; main()"]


class Front:
    """Runs the installed command and tells whether Python started for it."""

    def __init__(self, root: Path, marks: Path) -> None:
        self.root, self.marks = root, marks
        (marks / "sitecustomize.py").write_text(
            "import os\nopen(os.path.join(os.path.dirname(__file__), 'started'), 'a').write('x')\n"
        )
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(marks), os.environ.get("PYTHONPATH")])))

    def _run(self, argv: list[str], env: dict[str, str] | None) -> Result:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env,
                           stdin=subprocess.DEVNULL)
        return Result(p.returncode, p.stdout, p.stderr)

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
    b = bundle(["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    pid = create(front.root, b, cid, reaper)
    assert front.fast("start", cid).returncode == 0
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
