"""``aioruntime update``, ``pause``, ``resume`` and ``events`` held against runc on the
same bundle: the same cgroup files written, the same JSON shapes, words and exit codes."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of
from test_cli import Reaper, cli, copy_bundle, create, error_text, force_delete, needs_runc, ok, reaper, runc, state_of

from tools.cgroup_tree import cgroup_dirs

__all__ = ["reaper"]  # the fixture, imported for this module's tests

SLEEP = ["sleep", "1000"]
UPDATE_FLAGS = ["--memory", "64m", "--memory-swap", "128m", "--memory-reservation", "32m", "--cpu-share", "512",
                "--cpu-quota", "50000", "--cpu-period", "100000", "--cpuset-cpus", "0", "--cpuset-mems", "0",
                "--pids-limit", "20", "--blkio-weight", "300"]
UPDATED_FILES = {
    ("memory", "memory.limit_in_bytes"): str(64 << 20),
    ("memory", "memory.memsw.limit_in_bytes"): str(128 << 20),
    ("memory", "memory.soft_limit_in_bytes"): str(32 << 20),
    ("cpu", "cpu.shares"): "512",
    ("cpu", "cpu.cfs_quota_us"): "50000",
    ("cpu", "cpu.cfs_period_us"): "100000",
    ("cpuset", "cpuset.cpus"): "0",
    ("cpuset", "cpuset.mems"): "0",
    ("pids", "pids.max"): "20",
    ("blkio", "blkio.bfq.weight"): "300",
}


def files(cgroups_path: str) -> dict[tuple[str, str], str]:
    """The values of UPDATED_FILES' files in the cgroup ``cgroups_path``."""
    dirs = {d.relative_to("/sys/fs/cgroup").parts[0]: d for d in cgroup_dirs(cgroups_path)}
    return {(h, name): (dirs[h] / name).read_text().strip() for h, name in UPDATED_FILES}


@contextlib.contextmanager
def twins(state_root: Path, bundle: Path, cid: str, reaper: Reaper, tmp_path: Path, *, start: bool) -> Iterator[Path]:
    """The bundle's container made by aioruntime (under ``state_root``) and by runc (under
    the root yielded), started or only created; both force-deleted at the end."""
    runc_bundle = copy_bundle(bundle, tmp_path / "runc-bundle", cgroups_path_of(bundle) + "-runc")
    runc_root = tmp_path / "runc-root"
    pid = create(state_root, bundle, cid, reaper)
    runc_pid = 0
    try:
        if start:
            ok(cli(state_root, "start", cid))
        pid_file = runc_bundle / "init.pid"
        ok(runc(runc_root, "run" if start else "create", *(["-d"] if start else []), "-b", str(runc_bundle),
                "--pid-file", str(pid_file), cid))
        runc_pid = reaper.track(int(pid_file.read_text()))  # orphaned to us too
        yield runc_root
    finally:
        runc(runc_root, "delete", "-f", cid)
        if runc_pid:
            reaper.wait(runc_pid)
        force_delete(state_root, cid, reaper, pid)
    assert_no_leftovers(state_root, cid, cgroups_path_of(bundle), pid=pid)


def shape(value: Any) -> Any:
    """A JSON value with every leaf replaced by its type: what two stats documents share."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


# -- update --------------------------------------------------------------------------------


@needs_runc
@pytest.mark.parametrize("how", ["flags", "stdin"])
def test_update_writes_what_runc_writes(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                        tmp_path: Path, how: str) -> None:
    b = bundle(SLEEP)
    with twins(state_root, b, cid, reaper, tmp_path, start=False) as runc_root:
        if how == "flags":
            ok(cli(state_root, "update", *UPDATE_FLAGS, cid))
            ok(runc(runc_root, "update", *UPDATE_FLAGS, cid))
        else:
            doc = json.dumps({"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20},
                              "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
                              "blockIO": {"weight": 300}, "pids": {"limit": 20}})
            for tool, root in ((AIORUNTIME, state_root), ("runc", runc_root)):
                subprocess.run([tool, "--root", str(root), "update", "-r", "-", cid], input=doc.encode(),
                               check=True, capture_output=True, timeout=30)
        ours = files(cgroups_path_of(b))
        assert ours == UPDATED_FILES
        assert ours == files(cgroups_path_of(b) + "-runc")
        assert state_of(state_root, cid)["status"] == "created"


@needs_runc
@pytest.mark.parametrize(
    ("flags", "runc_words", "our_words"),
    [
        (["--memory", "abc"], "invalid value for memory: invalid size: 'abc'", None),
        (["--cpu-period", "x"], 'invalid value for cpu-period: strconv.ParseUint: parsing "x": invalid syntax', None),
        (["--cpu-share", "1"], "cpu-shares is 2", "linux.resources.cpu.shares: expected CPU shares from 2 to 262144"),
        (["--cpuset-cpus", "99"], "numerical result out of range", "linux.resources.cpu.cpus: the kernel refused '99'"),
    ],
)
def test_update_with_an_invalid_value_fails_like_runc_and_changes_nothing(
    state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper, tmp_path: Path,
    flags: list[str], runc_words: str, our_words: str | None,
) -> None:
    b = bundle(SLEEP, linux={"resources": {"cpu": {"shares": 700}}})
    with twins(state_root, b, cid, reaper, tmp_path, start=False) as runc_root:
        ours, theirs = cli(state_root, "update", "--memory", "96m", *flags, cid), runc(runc_root, "update", *flags, cid)
        assert ours.returncode == theirs.returncode == 1
        assert runc_words in error_text(theirs.stderr)
        assert (our_words or runc_words) in error_text(ours.stderr)
        assert files(cgroups_path_of(b))[("cpu", "cpu.shares")] == "700"  # nothing half-applied
        assert int(files(cgroups_path_of(b))[("memory", "memory.limit_in_bytes")]) > 1 << 40


def test_update_resources_file_errors_name_the_field(state_root: Path, bundle: BundleFactory, cid: str,
                                                      reaper: Reaper, tmp_path: Path) -> None:
    b = bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    try:
        doc = tmp_path / "r.json"
        doc.write_text('{"pids": {"limit": "many"}}')
        r = cli(state_root, "update", "--resources", str(doc), cid)
        assert r.returncode == 1 and "linux.resources.pids.limit: expected an integer" in error_text(r.stderr)
        doc.write_text("{")
        r = cli(state_root, "update", "-r", str(doc), cid)
        assert r.returncode == 1 and "not valid JSON" in error_text(r.stderr)
    finally:
        force_delete(state_root, cid, reaper, pid)


def test_kernel_memory_is_ignored_with_a_warning_as_runc(state_root: Path, bundle: BundleFactory, cid: str,
                                                          reaper: Reaper, tmp_path: Path) -> None:
    """runc 1.1 logs "Kernel memory settings are ignored" and goes on; so do we, on the
    --log file in its format, or on stderr without one."""
    b = bundle(SLEEP, linux={"resources": {"memory": {"limit": 64 << 20, "kernel": 32 << 20}}})
    log = tmp_path / "log.json"
    pid_file = tmp_path / "pid"
    ok(cli(None, "--root", str(state_root), "--log", str(log), "--log-format", "json",
           "create", "-b", str(b), "--pid-file", str(pid_file), cid))
    pid = reaper.track(int(pid_file.read_text()))
    try:
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(x["level"], x["msg"]) for x in lines] == [
            ("warning", "linux.resources.memory.kernel: kernel memory settings are ignored and will be removed")]
        assert int(files(cgroups_path_of(b))[("memory", "memory.limit_in_bytes")]) == 64 << 20
        r = ok(cli(state_root, "update", "--kernel-memory", "10m", "--memory", "96m", cid))
        assert re.search(r'level=warning msg=".*memory.kernel: kernel memory settings are ignored', r.stderr)
        assert int(files(cgroups_path_of(b))[("memory", "memory.limit_in_bytes")]) == 96 << 20
    finally:
        force_delete(state_root, cid, reaper, pid)


# -- pause and resume ------------------------------------------------------------------------


@needs_runc
def test_pause_resume_and_their_refusals_as_runc(state_root: Path, bundle: BundleFactory, cid: str,
                                                 reaper: Reaper, tmp_path: Path) -> None:
    with twins(state_root, bundle(SLEEP), cid, reaper, tmp_path, start=True) as runc_root:
        for args in (["pause"], ["pause"], ["delete"], ["resume"], ["resume"]):
            ours, theirs = cli(state_root, *args, cid), runc(runc_root, *args, cid)
            assert ours.returncode == theirs.returncode, (args, ours.stderr, theirs.stderr)
            if args[0] != "delete":  # runc's own wording there; ours names both statuses
                assert error_text(ours.stderr) == error_text(theirs.stderr), args
            assert state_of(state_root, cid)["status"] == json.loads(runc(runc_root, "state", cid).stdout)["status"]
        assert state_of(state_root, cid)["status"] == "running"


def test_delete_force_of_a_paused_container(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper) -> None:
    b = bundle(SLEEP)
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "start", cid))
    ok(cli(state_root, "pause", cid))
    assert state_of(state_root, cid)["status"] == "paused"
    r = cli(state_root, "delete", cid)
    assert r.returncode == 1 and "paused" in error_text(r.stderr)
    assert force_delete(state_root, cid, reaper, pid) == -signal.SIGKILL
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


# -- events ----------------------------------------------------------------------------------


@needs_runc
def test_events_stats_has_runcs_shape(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                      tmp_path: Path) -> None:
    b = bundle(SLEEP, linux={"resources": {"memory": {"limit": 64 << 20}, "pids": {"limit": 30}}})
    with twins(state_root, b, cid, reaper, tmp_path, start=True) as runc_root:
        ours_text, theirs_text = ok(cli(state_root, "events", "--stats", cid)).stdout, ok(runc(runc_root, "events", "--stats", cid)).stdout
        assert ours_text.count("\n") == theirs_text.count("\n") == 1
        ours, theirs = json.loads(ours_text), json.loads(theirs_text)
        assert list(ours) == list(theirs) == ["type", "id", "data"]
        assert (ours["type"], ours["id"]) == ("stats", cid)
        assert shape(ours["data"]) == shape(theirs["data"])
        assert list(ours["data"]) == list(theirs["data"])  # key order too
        assert list(ours["data"]["memory"]["raw"]) == list(theirs["data"]["memory"]["raw"])
        assert ours["data"]["pids"] == theirs["data"]["pids"] == {"current": 1, "limit": 30}
        assert ours["data"]["memory"]["usage"]["limit"] == 64 << 20


def test_events_streams_stats_and_oom_until_the_container_is_deleted(
    state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper
) -> None:
    limit = {"memory": {"limit": 16 << 20, "swap": 16 << 20}}
    b = bundle(["sh", "-c", "sleep 0.3; dd if=/dev/zero of=/dev/null bs=64M count=1; exec sleep 1000"],
               linux={"resources": limit})
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "start", cid))
    events = subprocess.Popen([AIORUNTIME, "--root", str(state_root), "events", "--interval", "100ms", cid],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert events.stdout is not None
    try:
        lines = [json.loads(events.stdout.readline()) for _ in range(6)]
        kinds = [e["type"] for e in lines]
        assert "oom" in kinds and kinds.count("stats") >= 4, kinds
        assert {"type": "oom", "id": cid} in lines
        force_delete(state_root, cid, reaper, pid)
        assert events.wait(10) == 0  # ends with the container, as runc's does
    finally:
        if events.poll() is None:
            events.kill()
            events.wait()
        events.stdout.close()
        assert events.stderr is not None
        events.stderr.close()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


@needs_runc
@pytest.mark.parametrize("args", [["events", "--stats"], ["events", "--interval", "0s"], ["events", "--interval", "1x"]])
def test_events_refusals_as_runc(state_root: Path, bundle: BundleFactory, cid: str, reaper: Reaper,
                                 tmp_path: Path, args: list[str]) -> None:
    b = bundle(["true"])
    rb = copy_bundle(b, tmp_path / "runc-bundle", cgroups_path_of(b) + "-runc")
    runc_root = tmp_path / "runc-root"
    pid = create(state_root, b, cid, reaper)
    ok(cli(state_root, "start", cid))
    reaper.wait(pid)
    ok(runc(runc_root, "run", "--keep", "-b", str(rb), cid))  # in the foreground: stopped once it returns
    try:
        ours, theirs = cli(state_root, *args, cid), runc(runc_root, *args, cid)
        assert ours.returncode == theirs.returncode == 1
        assert error_text(ours.stderr) == error_text(theirs.stderr)
    finally:
        runc(runc_root, "delete", "-f", cid)
        ok(cli(state_root, "delete", cid))
