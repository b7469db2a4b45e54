"""Network benchmark: what a network adds to a container, at create→start and at delete.

Three variants of the same busybox ``/bin/true`` container, interleaved round by round:

    own netns      a new network namespace with ``lo`` up (the init's ioctl), nothing else
    network        + a veth pair on a bridge, an address and a default route (pyroute2)
    network+port   + one published port (an nft table: DNAT and masquerade, ``nft -j``)

For each it times ``create()`` + ``start()`` (until start returns) and, once the process has
exited, ``delete()`` (which releases the veth pair, the nft table and the address), and the
longest stall of the event loop during each: a heartbeat task wakes every millisecond, and a
late wake-up is time some step held the loop's thread (netlink requests run inside
sendmsg(), so a slow one stalls the loop however the socket is wrapped). Run as root from
the repository, with the project's venv::

    sudo .venv/bin/python benchmarks/network.py [-n 50] [--json]

Everything it makes (state root, bundle, the cgroup parent ``/aioruntime-netbench-<pid>``,
the bridge ``anb<pid>`` and the nft tables) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.busybox_rootfs import build_rootfs, make_bundle  # noqa: E402
from tools.cgroup_tree import remove_tree  # noqa: E402

from aioruntime import DEVNULL, Container  # noqa: E402

if TYPE_CHECKING:
    from aioruntime import Network


@dataclass
class Variant:
    name: str
    network: bool
    port: bool
    start_ms: list[float] = field(default_factory=list)
    attach_ms: list[float] = field(default_factory=list)
    delete_ms: list[float] = field(default_factory=list)
    start_stall_ms: list[float] = field(default_factory=list)
    delete_stall_ms: list[float] = field(default_factory=list)


class Heartbeat:
    """Measures the longest time the loop could not run its callbacks (beyond the 1 ms tick)."""

    TICK = 0.001

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.TICK)
            self.worst = max(self.worst, loop.time() - t - self.TICK)

    def __enter__(self) -> Heartbeat:
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    def take(self) -> float:
        """The longest stall since the last take, in ms."""
        worst, self.worst = self.worst, 0.0
        return worst * 1000

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[-1] if len(samples) > 1 else samples[0]


async def one(c: Container, v: Variant, net: Network, port: int, beat: Heartbeat, *, measured: bool) -> None:
    """create (+ attach) + start, wait, delete: timed, with the loop's longest stall in each.

    The network is attached by hand after create, which is what ``create()`` does with
    ``network=``, so that the attachment is timed on its own too.
    """
    await asyncio.sleep(0.005)  # a clean slate for the heartbeat
    beat.take()
    t0 = time.perf_counter()
    await c.create()
    ta = time.perf_counter()
    if v.network:
        await c.attach(net, ports={port: 80} if v.port else None)
    tb = time.perf_counter()
    await c.start()
    t1 = time.perf_counter()
    start_stall = beat.take()
    code = await c.wait()
    await asyncio.sleep(0.005)
    beat.take()
    t2 = time.perf_counter()
    await c.delete()
    t3 = time.perf_counter()
    delete_stall = beat.take()
    if code != 0:
        raise RuntimeError(f"{v.name}: exit status {code}")
    if measured:
        v.start_ms.append((t1 - t0) * 1000)
        v.attach_ms.append((tb - ta) * 1000)
        v.delete_ms.append((t3 - t2) * 1000)
        v.start_stall_ms.append(start_stall)
        v.delete_stall_ms.append(delete_stall)


async def bench(n: int, warmup: int, workdir: Path) -> tuple[dict[str, dict[str, object]], float]:
    t0 = time.perf_counter()
    from aioruntime.errors import SubnetClashError
    from aioruntime.network import Network  # the lazy import of pyroute2, timed

    import_ms = (time.perf_counter() - t0) * 1000

    rootfs = build_rootfs(workdir / "rootfs")
    root = workdir / "state"
    parent = f"aioruntime-netbench-{os.getpid()}"
    net = None
    for second in random.sample(range(100, 250), 150):
        try:
            subnet = ipaddress.IPv4Network(f"10.{second}.{random.randrange(256)}.0/24")
            net = await Network.create(f"anb{os.getpid()}"[:15], subnet=str(subnet), root=root)
            break
        except SubnetClashError:
            continue
    if net is None:
        raise RuntimeError("no free 10.x.y.0/24 subnet on this host")
    variants = [Variant("own netns", False, False), Variant("network", True, False), Variant("network+port", True, True)]
    counter = 0
    try:
        with Heartbeat() as beat:
            for rnd in range(warmup + n):
                shift = rnd % len(variants)
                for v in variants[shift:] + variants[:shift]:
                    counter += 1
                    cid = f"netbench-{os.getpid()}-{counter}"
                    bundle = make_bundle(workdir / "bundle", rootfs, ["/bin/true"], cgroups_path=f"/{parent}/{cid}")
                    c = Container(cid, bundle, root=root, stdin=DEVNULL, stdout=DEVNULL)
                    await one(c, v, net, 20000 + counter % 10000, beat, measured=rnd >= warmup)
    finally:
        for cid in os.listdir(root):
            if not cid.startswith("."):
                print(f"warning: {cid} left in the state root", file=sys.stderr)
                await Container(cid, root=root).delete(force=True)
        await net.delete(force=True)
        if left := remove_tree(parent):
            print("warning: cgroups left behind:", *left, sep="\n  ", file=sys.stderr)

    base = variants[0]
    results: dict[str, dict[str, object]] = {}
    for v in variants:
        med = {name: statistics.median(getattr(v, name)) for name in ("start_ms", "delete_ms")}
        results[v.name] = {
            "create_start_median_ms": round(med["start_ms"], 3),
            "create_start_p90_ms": round(p90(v.start_ms), 3),
            "create_start_added_ms": round(med["start_ms"] - statistics.median(base.start_ms), 3),
            "attach_median_ms": round(statistics.median(v.attach_ms), 3),
            "create_start_stall_median_ms": round(statistics.median(v.start_stall_ms), 3),
            "create_start_stall_max_ms": round(max(v.start_stall_ms), 3),
            "delete_median_ms": round(med["delete_ms"], 3),
            "delete_p90_ms": round(p90(v.delete_ms), 3),
            "delete_added_ms": round(med["delete_ms"] - statistics.median(base.delete_ms), 3),
            "delete_stall_median_ms": round(statistics.median(v.delete_stall_ms), 3),
            "delete_stall_max_ms": round(max(v.delete_stall_ms), 3),
        }
    return results, import_ms


def main() -> int:
    parser = argparse.ArgumentParser(description="the cost of a network per container: create→start and delete")
    parser.add_argument("-n", type=int, default=50, help="measured rounds (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first (default 3)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    ns = parser.parse_args()
    if ns.n < 1:
        parser.error("-n must be at least 1")
    if os.geteuid() != 0:
        parser.error("run as root: containers and bridges need it")
    with tempfile.TemporaryDirectory(prefix="aioruntime-netbench-") as tmp:
        results, import_ms = asyncio.run(bench(ns.n, ns.warmup, Path(tmp)))
    print(f"{'':<14}{'create→start ms':^40}{'delete ms':^40}   (n={ns.n})")
    print(f"{'variant':<14}" + f"{'median':>8}{'p90':>8}{'added':>8}{'stall':>8}{'max':>8}" * 2)
    for name, r in results.items():
        row = [r[f"{step}_{k}_ms"] for step in ("create_start", "delete")
               for k in ("median", "p90", "added", "stall_median", "stall_max")]
        print(f"{name:<14}" + "".join(f"{x:>8.2f}" for x in row))
    print("stall: the longest the event loop was held during the step (median over rounds, and max)")
    print("attach (inside create→start), median ms: " + ", ".join(f"{k} {r['attach_median_ms']:.2f}" for k, r in results.items()))
    print(f"once per process: importing the network package (pyroute2, asyncio already loaded) {import_ms:.1f} ms")
    if ns.json:
        print(json.dumps({"n": ns.n, "import_ms": round(import_ms, 1), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
