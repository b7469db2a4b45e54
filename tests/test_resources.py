"""linux.resources and ``update`` on the real kernel (this machine's cgroup v1 controllers):
each resource set and seen in its cgroup file, its effect observed where cheap (a memory
hog OOM-killed, a fork bomb held at the pids limit, a denied device), and every refusal a
typed error that leaves nothing half-applied. The device rules' v1 semantics and their
cgroup2 BPF program are checked against the kernel directly, in raw test cgroups."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cgroup_helpers import block_device, cg, started, value
from helpers import BundleFactory, assert_no_leftovers, cgroups_path_of
from test_isolation import run

from aioruntime import ConfigError, Container, InvalidStateError
from aioruntime._native import lib
from aioruntime.cgroups import devices as devs
from aioruntime.cgroups.resources import DeviceChange, apply_devices
from aioruntime.errors import IgnoredSettingWarning, ResourceError
from aioruntime.events import OOM, Exited
from aioruntime.spec.resources import (
    CPU,
    BlockIO,
    DeviceRule,
    Memory,
    Pids,
    Resources,
    ThrottleDevice,
    merge,
    parse_resources,
    to_dict,
)

SLEEP = ["sh", "-c", "echo up; exec sleep 100"]
MKNOD_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_MKNOD"]


# -- the model -----------------------------------------------------------------------------


def test_oci_json_round_trip_and_runc_zero_means_unset() -> None:
    doc = {"memory": {"limit": 64 << 20, "swap": -1, "kernelTCP": 0, "disableOOMKiller": True},
           "cpu": {"shares": 0, "quota": 50000, "cpus": ""}, "pids": {"limit": 0},
           "blockIO": {"throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
           "unified": {"memory.high": "1M"}}
    r = parse_resources(doc)
    assert r.memory == Memory(limit=64 << 20, swap=-1, disable_oom_killer=True)
    assert r.cpu == CPU(quota=50000) and r.pids == Pids()
    assert to_dict(r) == {"memory": {"limit": 64 << 20, "swap": -1, "disableOOMKiller": True},
                          "cpu": {"quota": 50000}, "pids": {},
                          "blockIO": {"throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
                          "unified": {"memory.high": "1M"}}
    assert to_dict(Resources(devices=())) == {"devices": []}  # "no rules", unlike None


@pytest.mark.parametrize(
    ("doc", "path", "words"),
    [
        ({"memory": {"limit": -5}}, "linux.resources.memory.limit", "or -1 for unlimited"),
        ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness", "0 to 100"),
        ({"cpu": {"shares": 1}}, "linux.resources.cpu.shares", "2 to 262144"),
        ({"cpu": {"quota": 10}}, "linux.resources.cpu.quota", "at least 1000"),
        ({"cpu": {"period": 10}}, "linux.resources.cpu.period", "1000 to 1000000"),
        ({"cpu": {"cpus": "0-a"}}, "linux.resources.cpu.cpus", '"0-3,6"'),
        ({"blockIO": {"weight": 5}}, "linux.resources.blockIO.weight", "10 to 1000"),
        ({"blockIO": {"weightDevice": [{"major": 8, "minor": 0}]}}, "linux.resources.blockIO.weightDevice[0]", "weight"),
        ({"devices": [{"allow": True, "access": "rwx"}]}, "linux.resources.devices[0].access", "rwm"),
        ({"devices": [{"allow": True, "major": 1}]}, "linux.resources.devices[0]", 'type "a"'),
        ({"devices": [{"access": "r"}]}, "linux.resources.devices[0].allow", "required"),
        ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]}, "linux.resources.hugepageLimits[0].pageSize", "2MB"),
        ({"unified": {"../x": "1"}}, 'linux.resources.unified["../x"]', "cgroup v2 interface file"),
        ({"pids": {"limit": "10"}}, "linux.resources.pids.limit", "integer"),
    ],
)
def test_invalid_values_name_their_json_path(doc: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_resources(doc)
    assert e.value.path == path
    assert words in str(e.value)


def test_swap_below_the_limit_is_refused_in_a_config(bundle: BundleFactory) -> None:
    from aioruntime.spec import load

    b = bundle(["true"], linux={"resources": {"memory": {"limit": 64 << 20, "swap": 32 << 20}}})
    with pytest.raises(ConfigError) as e:
        load(b)
    assert e.value.path == "linux.resources.memory.swap" and "below the memory limit" in str(e.value)


def test_update_merges_like_runc() -> None:
    now = Resources(memory=Memory(limit=1 << 30, swap=2 << 30), cpu=CPU(shares=512, cpus="0-1"),
                    block_io=BlockIO(throttle_read_bps_device=(ThrottleDevice(8, 0, 1), ThrottleDevice(8, 16, 2))))
    change = Resources(memory=Memory(limit=1 << 29), cpu=CPU(quota=20000),
                       block_io=BlockIO(throttle_read_bps_device=(ThrottleDevice(8, 16, 5),)))
    merged = merge(now, change)
    assert merged.memory == Memory(limit=1 << 29, swap=2 << 30)
    assert merged.cpu == CPU(shares=512, quota=20000, cpus="0-1")
    assert merged.block_io is not None
    assert merged.block_io.throttle_read_bps_device == (ThrottleDevice(8, 0, 1), ThrottleDevice(8, 16, 5))
    assert merge(now, Resources()).devices is None and merge(now, Resources(devices=())).devices == ()


# -- device rules: v1 semantics, emulated -------------------------------------------------------


def test_emulation_follows_the_v1_kernel_rules() -> None:
    deny_all, allow_null = DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm")
    s = devs.emulate([deny_all, allow_null, DeviceRule(True, "c", 1, 3, "m"), DeviceRule(False, "c", 1, 3, "w")])
    assert s == devs.DeviceState(False, {("c", 1, 3): frozenset("rm")})
    # with an allow default an allow rule only removes a deny exception
    assert devs.emulate([DeviceRule(True, "b", 8, None, "r")]) == devs.OPEN
    assert devs.emulate([DeviceRule(False, "b", 8, None, "r")]) == devs.DeviceState(True, {("b", 8, None): frozenset("r")})


def test_default_rules_follow_the_config_and_its_devices_replace_them() -> None:
    rules = devs.effective_rules([DeviceRule(False)], ["/dev/null"])
    assert rules[0] == DeviceRule(False)
    assert DeviceRule(True, "c", 1, 3, "rwm") not in rules  # the config's /dev/null takes its place
    assert DeviceRule(True, "c", 1, 5, "rwm") in rules


def test_transition_writes_only_the_differences_additions_first() -> None:
    old = devs.emulate([DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm"), DeviceRule(True, "c", 1, 5, "r")])
    new = devs.emulate([DeviceRule(False), DeviceRule(True, "c", 1, 3, "rwm"), DeviceRule(True, "c", 1, 9, "rw")])
    assert devs.transition(old, new) == [("devices.allow", "c 1:9 rw"), ("devices.deny", "c 1:5 r")]
    assert devs.transition(devs.OPEN, new)[0] == ("devices.deny", "a")  # a new default resets first


@pytest.fixture
def raw_cgroups(cgroup_parent: str, cid: str) -> Iterator[dict[str, Path]]:
    """An empty cgroup of this test under the session parent, in the devices (v1) and
    unified (v2) hierarchies; removed at the end."""
    made = {}
    for name in ("devices", "unified"):
        d = Path("/sys/fs/cgroup") / name / cgroup_parent / cid
        d.mkdir(parents=True)
        made[name] = d
    yield made
    for d in made.values():
        d.rmdir()


def in_cgroup(directory: Path, script: str) -> str:
    """Run ``script`` in a host shell moved into ``directory`` first; its stdout."""
    r = subprocess.run(["sh", "-c", f"echo $$ > {directory}/cgroup.procs; {script}"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=30, check=False)
    return r.stdout


DEVICE_SCRIPT = (
    "cd $(mktemp -d); mknod loop b 7 0 && echo mknod-loop; mknod mem c 1 1 || echo mknod-mem-denied; "
    "dd if=loop of=/dev/null bs=1 count=0 2>/dev/null && echo read-loop; "
    "(echo > loop) 2>/dev/null || echo write-loop-denied; echo > /dev/null && echo null; "
    "head -c1 /dev/zero >/dev/null 2>&1 || echo zero-denied; cd /; rm -rf $OLDPWD"
)
DEVICE_RULES = [DeviceRule(False), DeviceRule(True, "b", 7, None, "rm"), DeviceRule(True, "c", 1, 3, "rw")]
DEVICE_SEEN = ["mknod-loop", "mknod-mem-denied", "read-loop", "write-loop-denied", "null", "zero-denied"]


@pytest.mark.parametrize("version", [1, 2])
def test_device_rules_deny_mknod_and_open_on_the_kernel(raw_cgroups: dict[str, Path], version: int) -> None:
    """The same rules through v1 files and through the cgroup2 BPF program, seen by a process."""
    directory = raw_cgroups["devices" if version == 1 else "unified"]
    state = devs.emulate(DEVICE_RULES)
    apply_devices(DeviceChange("linux.resources.devices", version, str(directory), devs.OPEN, state))
    if version == 1:
        assert (directory / "devices.list").read_text().split("\n")[:2] == ["b 7:* rm", "c 1:3 rw"]
    else:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert lib.aio_bpf_devices_count(fd) == 1
            # a replacement replaces: still one program
            apply_devices(DeviceChange("linux.resources.devices", 2, str(directory), state, state))
            assert lib.aio_bpf_devices_count(fd) == 1
        finally:
            os.close(fd)
    assert in_cgroup(directory, DEVICE_SCRIPT).split() == DEVICE_SEEN


# -- each resource, set and seen in its file ----------------------------------------------------------


async def test_every_v1_resource_is_written_to_its_file(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    disk = block_device()
    major, minor = map(int, disk.split(":"))
    resources = {
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20, "kernelTCP": 16 << 20,
                   "swappiness": 10, "disableOOMKiller": False, "useHierarchy": True},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 10000, "realtimePeriod": 500000,
                "idle": 0, "cpus": "0", "mems": "0"},
        "pids": {"limit": 32},
        "blockIO": {"weight": 500,
                    "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
                    "throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 2 << 20}],
                    "throttleReadIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
                    "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 200}]},
        "unified": {"cgroup.max.descendants": "10"},
    }
    b = bundle(SLEEP, linux={"resources": resources})
    c = await started(b, cid, state_root)
    try:
        assert value(b, "memory", "memory.limit_in_bytes") == str(64 << 20)
        assert value(b, "memory", "memory.soft_limit_in_bytes") == str(32 << 20)
        assert value(b, "memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
        assert value(b, "memory", "memory.kmem.tcp.limit_in_bytes") == str(16 << 20)
        assert value(b, "memory", "memory.swappiness") == "10"
        assert value(b, "memory", "memory.oom_control").startswith("oom_kill_disable 0")
        assert value(b, "memory", "memory.use_hierarchy") == "1"
        assert value(b, "cpu", "cpu.shares") == "512"
        assert value(b, "cpu", "cpu.cfs_quota_us") == "50000"
        assert value(b, "cpu", "cpu.cfs_period_us") == "100000"
        assert value(b, "cpu", "cpu.cfs_burst_us") == "10000"
        assert value(b, "cpu", "cpu.rt_period_us") == "500000"
        assert value(b, "cpu", "cpu.idle") == "0"
        assert value(b, "cpuset", "cpuset.cpus") == "0" and value(b, "cpuset", "cpuset.mems") == "0"
        assert value(b, "pids", "pids.max") == "32"
        weight = "blkio.weight" if (cg(b, "blkio") / "blkio.weight").exists() else "blkio.bfq.weight"
        assert value(b, "blkio", weight) == "500"
        for file, rate in (("read_bps_device", 1 << 20), ("write_bps_device", 2 << 20),
                           ("read_iops_device", 100), ("write_iops_device", 200)):
            assert value(b, "blkio", f"blkio.throttle.{file}") == f"{disk} {rate}"
        assert value(b, "unified", "cgroup.max.descendants") == "10"
        # the init runs under them: it is in those cgroups
        assert str(c.pid) in value(b, "memory", "cgroup.procs").split()
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_oom_disabled_and_memory_limit_minus_one(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP, linux={"resources": {"memory": {"limit": -1, "disableOOMKiller": True}}})
    c = await started(b, cid, state_root)
    try:
        assert value(b, "memory", "memory.oom_control").startswith("oom_kill_disable 1")
        assert int(value(b, "memory", "memory.limit_in_bytes")) > 1 << 60  # unlimited
        assert int(value(b, "memory", "memory.memsw.limit_in_bytes")) > 1 << 60  # and swap too, as runc
    finally:
        await c.delete(force=True)


@pytest.mark.parametrize(
    ("resources", "field", "words"),
    [
        ({"blockIO": {"leafWeight": 500}}, "linux.resources.blockIO.leafWeight", "no blkio.leaf_weight"),
        # no 4 MB pages here; without a hugetlb hierarchy (others may mount one) no controller either
        ({"hugepageLimits": [{"pageSize": "4MB", "limit": 1 << 22}]}, "linux.resources.hugepageLimits",
         ("hugetlb cgroup controller is not available", "no 4MB huge pages")),
        ({"network": {"classID": 7}}, "linux.resources.network", "net_cls cgroup controller is not available"),
        ({"network": {"priorities": [{"name": "lo", "priority": 1}]}}, "linux.resources.network",
         "net_prio cgroup controller is not available"),
        ({"rdma": {"mlx4_0": {"hcaHandles": 2}}}, "linux.resources.rdma", "rdma cgroup controller is not available"),
        ({"unified": {"memory.high": "1M"}}, 'linux.resources.unified["memory.high"]', "no memory.high"),
        ({"cpu": {"cpus": "7"}}, "linux.resources.cpu.cpus", "refused '7' for cpuset.cpus"),
    ],
)
async def test_a_resource_the_kernel_lacks_fails_create_and_leaves_nothing(
    bundle: BundleFactory, state_root: Path, cid: str, resources: dict[str, Any], field: str,
    words: str | tuple[str, ...],
) -> None:
    b = bundle(SLEEP, linux={"resources": resources})
    c = Container(cid, b, root=state_root)
    with pytest.raises(ResourceError) as e:
        await c.create()
    assert e.value.field.startswith(field)
    assert any(w in str(e.value) for w in ((words,) if isinstance(words, str) else words)), str(e.value)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


# -- effects ---------------------------------------------------------------------------------


async def test_memory_hog_is_oom_killed_and_the_oom_event_arrives(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    limit = {"memory": {"limit": 16 << 20, "swap": 16 << 20}}
    b = bundle(["sh", "-c", "sleep 0.1; exec dd if=/dev/zero of=/dev/null bs=64M count=1"], linux={"resources": limit})
    c = Container(cid, b, root=state_root)
    seen: list[object] = []

    async def listen() -> None:
        async for event in c.events():
            seen.append(event)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    await c.create()
    await c.start()
    assert await c.wait() == -9
    assert int(value(b, "memory", "memory.oom_control").split()[-1]) >= 1  # oom_kill
    await c.delete()
    await asyncio.wait_for(listener, 10)
    kinds = [type(e).__name__ for e in seen]
    assert "OOM" in kinds and kinds.index("OOM") < kinds.index("Exited"), kinds
    assert next(e for e in seen if isinstance(e, Exited)).status == -9
    assert all(e.id == cid for e in seen if isinstance(e, OOM))  # type: ignore[attr-defined]


async def test_fork_bomb_stops_at_the_pids_limit(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    # the bomb runs in a subshell: the shell dies when a fork fails, the sleeps it forked stay
    script = "(while :; do sleep 100 & done) 2>/dev/null; echo up; exec sleep 100"
    b = bundle(["sh", "-c", script], linux={"resources": {"pids": {"limit": 8}}})
    c = await started(b, cid, state_root)
    try:
        assert value(b, "pids", "pids.current") == "7"  # the limit, less the subshell that failed
        events = dict(line.split() for line in value(b, "pids", "pids.events").splitlines())
        assert int(events["max"]) > 0  # forks were refused
        assert (await c.stats()).pids == (7, 8)
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_device_rules_hold_inside_the_container(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    """The default spec's deny-all plus runc's defaults plus a rule of ours: only what they
    allow opens; mknod is allowed for every device by runc's defaults, opening is not."""
    rules = [{"allow": False, "access": "rwm"}, {"allow": True, "type": "b", "major": 7, "access": "r"}]
    disk = block_device()
    script = (f"exec 2>&1; mknod /dev/disk b {disk.replace(':', ' ')} && echo mknod-disk; "
              "head -c1 /dev/disk >/dev/null || echo disk-denied; mknod /dev/loopx b 7 0; "
              "dd if=/dev/loopx of=/dev/null bs=1 count=0 2>/dev/null && echo loop-read; "
              "(echo > /dev/loopx) 2>/dev/null || echo loop-write-denied; "
              "head -c4 /dev/urandom | wc -c")
    caps = {k: MKNOD_CAPS for k in ("bounding", "effective", "permitted")}
    b = bundle(["sh", "-c", script], process={"capabilities": caps}, linux={"resources": {"devices": rules}})
    out = await run(state_root, cid, b)  # exit status 0, nothing left behind
    assert out.split("\n")[0] == "mknod-disk"
    assert "Operation not permitted" in out.split("\n")[1]
    assert out.split("\n")[2:] == ["disk-denied", "loop-read", "loop-write-denied", "4", ""], out


async def test_network_counters_of_the_container_interfaces(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    c = await started(bundle(SLEEP), cid, state_root)
    host, inside = f"ah{cid[-6:]}", f"ac{cid[-6:]}"
    net = f"10.254.{int(cid[-2:], 16)}"
    try:
        assert (await c.stats()).network_interfaces == ()  # only lo, which is not counted

        def ip(*args: str, netns: bool = False) -> None:
            prefix = ["nsenter", "-t", str(c.pid), "-n"] if netns else []
            subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)

        ip("link", "add", host, "type", "veth", "peer", "name", inside)
        try:
            ip("link", "set", inside, "netns", str(c.pid))
            ip("addr", "add", f"{net}.1/30", "dev", host)
            ip("link", "set", host, "up")
            ip("addr", "add", f"{net}.2/30", "dev", inside, netns=True)
            ip("link", "set", inside, "up", netns=True)
            import socket

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(5):
                    s.sendto(b"x" * 100, (f"{net}.2", 9))
                    await asyncio.sleep(0.02)
            stats = await c.stats()
            (nic,) = stats.network_interfaces
            assert nic.name == inside
            assert nic.rx_packets >= 5 and nic.rx_bytes >= 500
            assert nic.tx_packets >= 1  # ARP replies, ICMP port unreachable
        finally:
            subprocess.run(["ip", "link", "del", host], check=False, capture_output=True)
    finally:
        await c.delete(force=True)


# -- update ------------------------------------------------------------------------------------


async def test_update_changes_the_files_and_the_recorded_config(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(SLEEP, linux={"resources": {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}}})
    c = await started(b, cid, state_root)
    try:
        await c.update(Resources(memory=Memory(limit=128 << 20), pids=Pids(limit=32), cpu=CPU(shares=256)))
        assert value(b, "memory", "memory.limit_in_bytes") == str(128 << 20)
        assert value(b, "pids", "pids.max") == "32"
        assert value(b, "cpu", "cpu.shares") == "256"
        await c.update(Resources(pids=Pids(limit=-1)))
        assert value(b, "pids", "pids.max") == "max"
        recorded = json.loads((state_root / cid / "state.json").read_text())["config"]["linux"]["resources"]
        assert recorded["memory"] == {"limit": 128 << 20} and recorded["pids"] == {"limit": -1}
        assert recorded["cpu"] == {"shares": 256} and recorded["devices"] == [{"allow": False, "type": "a", "access": "rwm"}]
        assert c.config.linux.resources is not None and c.config.linux.resources.pids == Pids(limit=-1)
    finally:
        await c.delete(force=True)


async def test_update_refused_by_the_kernel_changes_nothing(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(SLEEP, linux={"resources": {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}}})
    c = await started(b, cid, state_root)
    try:
        before = (state_root / cid / "state.json").read_text()
        # the memory limit is written first, then the kernel refuses cpuset.cpus: it is put back
        with pytest.raises(ResourceError) as e:
            await c.update(Resources(memory=Memory(limit=96 << 20), cpu=CPU(shares=100, cpus="7"), pids=Pids(limit=9)))
        assert e.value.field == "linux.resources.cpu.cpus" and "Numerical result out of range" in str(e.value)
        with pytest.raises(ResourceError) as e:  # below what the container uses
            await c.update(Resources(pids=Pids(limit=9), memory=Memory(limit=4096)))
        assert e.value.field == "linux.resources.memory.limit" and "uses now" in str(e.value)
        assert value(b, "memory", "memory.limit_in_bytes") == str(64 << 20)
        assert value(b, "cpu", "cpu.shares") == "1024"
        assert value(b, "pids", "pids.max") == "50"
        assert (state_root / cid / "state.json").read_text() == before
    finally:
        await c.delete(force=True)


async def test_update_with_an_invalid_value_is_a_config_error(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(SLEEP, linux={"resources": {"memory": {"limit": 64 << 20, "swap": 64 << 20}}})
    c = await started(b, cid, state_root)
    try:
        with pytest.raises(ConfigError) as e:
            await c.update(Resources(cpu=CPU(shares=1)))
        assert e.value.path == "linux.resources.cpu.shares"
        with pytest.raises(ConfigError) as e:  # merged with the swap in force, the new limit does not fit
            await c.update(Resources(memory=Memory(limit=128 << 20)))
        assert e.value.path == "linux.resources.memory.swap"
        assert value(b, "memory", "memory.limit_in_bytes") == str(64 << 20)
        await c.update(Resources(memory=Memory(limit=128 << 20, swap=256 << 20)))  # memsw goes first
        assert value(b, "memory", "memory.memsw.limit_in_bytes") == str(256 << 20)
        assert value(b, "memory", "memory.limit_in_bytes") == str(128 << 20)
    finally:
        await c.delete(force=True)


async def test_update_replaces_device_rules_without_a_gap(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(SLEEP)
    c = await started(b, cid, state_root)
    try:
        rules = (DeviceRule(False), DeviceRule(True, "b", 7, 0, "r"))
        await c.update(Resources(devices=rules))
        listed = value(b, "devices", "devices.list").splitlines()
        assert "b 7:0 r" in listed and "c 1:3 rwm" in listed
        await c.update(Resources(devices=(DeviceRule(False),)))
        assert "b 7:0 r" not in value(b, "devices", "devices.list").splitlines()
    finally:
        await c.delete(force=True)


async def test_update_of_a_stopped_container_is_invalid_state(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    await c.create()
    await c.start()
    await c.wait()
    try:
        with pytest.raises(InvalidStateError) as e:
            await c.update(Resources(pids=Pids(limit=5)))
        assert e.value.current == "stopped" and e.value.operation == "update"
    finally:
        await c.delete()


# -- the cgroup2 paths this machine cannot run (its memory controller stays on v1) -----------------


def fake_cgroup(directory: Path, files: dict[str, str]) -> str:
    """A directory holding cgroup2 interface files as plain files: enough for the planners,
    which only check that a file exists, and for inotify, which sees plain files change."""
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return str(directory)


def test_v2_memory_plan_converts_swap_as_runc(tmp_path: Path) -> None:
    from aioruntime.cgroups import v2

    d = fake_cgroup(tmp_path / "cg", {"memory.max": "max\n", "memory.swap.max": "max\n", "memory.low": "0\n",
                                      "memory.current": str(80 << 20)})
    m = Memory(limit=64 << 20, swap=96 << 20, reservation=32 << 20)
    writes = [(Path(w.path).name, w.value) for w in v2.memory(m, m, d, "linux.resources.memory")]
    assert writes == [("memory.swap.max", str(32 << 20)), ("memory.max", str(64 << 20)), ("memory.low", str(32 << 20))]
    unlimited = Memory(limit=-1)
    assert [(Path(w.path).name, w.value) for w in v2.memory(unlimited, unlimited, d, "m")] == [
        ("memory.swap.max", "max"), ("memory.max", "max")]
    checked = Memory(limit=64 << 20, check_before_update=True)  # below memory.current: refused, not OOM-killed
    with pytest.raises(ResourceError) as e:
        v2.memory(Memory(limit=64 << 20), checked, d, "linux.resources.memory")
    assert e.value.field == "linux.resources.memory.limit" and "checkBeforeUpdate" in str(e.value)
    for field, record in (("swappiness", Memory(swappiness=10)), ("disableOOMKiller", Memory(disable_oom_killer=True))):
        with pytest.raises(ResourceError) as e:
            v2.memory(record, record, d, "linux.resources.memory")
        assert e.value.field == f"linux.resources.memory.{field}" and "cgroup v2 has no" in str(e.value)


def test_kernel_tcp_is_applied_where_v1_has_it_and_ignored_with_a_warning_elsewhere(tmp_path: Path) -> None:
    from aioruntime.cgroups.resources import _without_ignored_kernel_memory as without

    d = fake_cgroup(tmp_path / "cg", {"memory.kmem.tcp.limit_in_bytes": "0\n"})
    m = Memory(limit=1 << 30, kernel_tcp=1 << 20)
    assert without(m, d, 1, "linux.resources.memory") == m
    for version, directory in ((2, d), (1, str(tmp_path))):
        with pytest.warns(IgnoredSettingWarning, match=r"^linux\.resources\.memory\.kernelTCP: kernel memory settings"):
            assert without(m, directory, version, "linux.resources.memory") == Memory(limit=1 << 30)
    with pytest.warns(IgnoredSettingWarning, match=r"memory\.kernel and linux\.resources\.memory\.kernelTCP: "):
        assert without(Memory(kernel=1, kernel_tcp=1), d, 2, "linux.resources.memory") == Memory()


def test_v2_cpu_and_io_plans(tmp_path: Path) -> None:
    from aioruntime.cgroups import v2

    d = fake_cgroup(tmp_path / "cg", {"cpu.weight": "100\n", "cpu.max": "max 100000\n", "io.weight": "default 100\n",
                                      "io.max": ""})
    merged = CPU(shares=1024, quota=25000, period=50000)
    writes = [(Path(w.path).name, w.value) for w in v2.cpu(CPU(shares=1024, period=50000), merged, d, "c")]
    assert writes == [("cpu.weight", str(v2.shares_to_weight(1024))), ("cpu.max", "25000 50000")]
    assert v2.shares_to_weight(2) == 1 and v2.shares_to_weight(262144) == 10000  # runc's mapping
    b = BlockIO(weight=1000, throttle_write_bps_device=(ThrottleDevice(8, 0, 0),))
    assert [(Path(w.path).name, w.value) for w in v2.io(b, d, "b")] == [
        ("io.weight", "10000"), ("io.max", "8:0 wbps=max")]


def test_v2_oom_watch_counts_memory_events(tmp_path: Path) -> None:
    """The cgroup2 OOM watch on a memory.events file: inotify wakes it, the counters say how many."""
    from aioruntime.cgroups.notify import OomWatch
    from aioruntime.cgroups.placement import Cgroup

    d = fake_cgroup(tmp_path / "cg", {"memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"})
    watch = OomWatch(Cgroup({"memory": d}, {"memory": 2}, d))
    try:
        assert watch.read() == 0
        Path(d, "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
        import select

        assert select.select([watch.fd], [], [], 5)[0] == [watch.fd]
        assert watch.read() == 2 and not watch.gone
        Path(d, "memory.events").unlink()
        assert select.select([watch.fd], [], [], 5)[0] == [watch.fd]
        assert watch.read() == 0 and watch.gone
    finally:
        watch.close()


async def test_kernel_memory_limits_are_ignored_with_a_warning_as_runc(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    """runc 1.1 drops memory.kernel (Linux 6.x no longer enforces memory.kmem.limit_in_bytes)
    with a warning; the rest of the section is applied, at create and at update."""
    resources = {"memory": {"limit": 64 << 20, "kernel": 32 << 20}}
    b = bundle(SLEEP, linux={"resources": resources})
    with pytest.warns(IgnoredSettingWarning, match=r"linux\.resources\.memory\.kernel: kernel memory settings are ignored"):
        c = await started(b, cid, state_root)
    try:
        assert value(b, "memory", "memory.limit_in_bytes") == str(64 << 20)
        with pytest.warns(IgnoredSettingWarning, match=r"memory\.kernel"):
            await c.update(Resources(memory=Memory(kernel=16 << 20, limit=96 << 20)))
        assert value(b, "memory", "memory.limit_in_bytes") == str(96 << 20)
    finally:
        await c.delete(force=True)
