"""Event and statistics benchmark: how soon events arrive, and what streaming stats costs.

- exit -> event: SIGKILL to a container's init, until ``Exited`` reaches an ``events()``
  subscriber of the library (median and p90 of ``-n`` rounds);
- OOM -> event: a memory hog in a 4 MiB container is released (a byte through a fifo
  bound into it) and fills its memory; until the OOM event reaches the library's
  subscriber, ``aioruntime events`` and ``runc events`` (a line on their stdout). This is
  an upper bound of the kernel's OOM -> event time: it includes the hog's exec and its
  page faults up to the limit (about 2 MiB);
- CPU cost of stats for ``--containers`` running containers at 1 Hz for ``--seconds``:
  the library (one process, one ``stats_stream`` per container; its getrusage), one
  ``aioruntime events --interval 1s`` per container and one ``runc events --interval 1s``
  per container (their /proc/PID/stat CPU times), as a percentage of one core.

Run as root from the repository, with the project's venv::

    sudo .venv/bin/python benchmarks/events.py [-n 30] [--containers 100] [--seconds 20] [--json]

Everything it makes (state roots, bundles, the cgroup parent ``/aioruntime-bench-<pid>``)
is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.busybox_rootfs import build_rootfs, make_bundle  # noqa: E402
from tools.cgroup_tree import remove_tree  # noqa: E402

from aioruntime import DEVNULL, Container  # noqa: E402
from aioruntime.events import OOM, Exited  # noqa: E402

HOG = "read x < /trigger; exec dd if=/dev/zero of=/dev/null bs=64M count=1"
HOG_LIMIT = {"memory": {"limit": 4 << 20, "swap": 4 << 20}}  # sh and dd take about 2 MiB of it
TICK = os.sysconf("SC_CLK_TCK")


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(p90, 3), "n": len(ms)}


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.rootfs = build_rootfs(workdir / "rootfs")
        self.parent = f"aioruntime-bench-{os.getpid()}"
        self.cli = str(Path(sys.executable).parent / "aioruntime")
        self.runc = shutil.which("runc")
        self.root = workdir / "state"
        self.runc_root = workdir / "runc-state"
        self.count = 0

    def bundle(self, args: list[str], resources: dict[str, Any] | None = None) -> tuple[str, Path]:
        """A fresh id and a bundle for it (its own cgroup under the benchmark's parent)."""
        self.count += 1
        cid = f"ev-{os.getpid()}-{self.count}"
        return cid, make_bundle(self.workdir / "bundles" / cid, self.rootfs, args,
                                cgroups_path=f"/{self.parent}/{cid}", linux={"resources": resources or {}})

    def hog(self) -> tuple[str, Path, Path]:
        """A memory hog's id, bundle and trigger: a fifo bound to /trigger, on which it waits."""
        from aioruntime.spec import default_spec

        self.count += 1
        cid = f"ev-{os.getpid()}-{self.count}"
        fifo = self.workdir / f"trigger-{cid}"
        os.mkfifo(fifo)
        mounts = default_spec()["mounts"] + [
            {"destination": "/trigger", "type": "bind", "source": str(fifo), "options": ["bind"]}]
        bundle = make_bundle(self.workdir / "bundles" / cid, self.rootfs, ["sh", "-c", HOG],
                             cgroups_path=f"/{self.parent}/{cid}", linux={"resources": HOG_LIMIT}, mounts=mounts)
        return cid, bundle, fifo

    # -- latencies ---------------------------------------------------------------------------

    async def exit_latency(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            cid, b = self.bundle(["sleep", "1000"])
            c = Container(cid, b, root=self.root, stdin=DEVNULL, stdout=DEVNULL)
            await c.create()
            await c.start()
            arrived = asyncio.get_running_loop().create_future()

            async def listen() -> None:
                async for event in c.events():
                    if isinstance(event, Exited) and not arrived.done():
                        arrived.set_result(time.perf_counter())

            listener = asyncio.create_task(listen())
            await asyncio.sleep(0.01)  # subscribed, watches open
            assert c.pid is not None
            t0 = time.perf_counter()
            os.kill(c.pid, signal.SIGKILL)
            out.append(await asyncio.wait_for(arrived, 10) - t0)
            await c.delete()
            await asyncio.wait_for(listener, 10)
        return out

    @staticmethod
    async def release(fifo: Path) -> float:
        """Open the trigger for writing once the hog waits on it; send the byte; its time."""
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: no reader yet
                await asyncio.sleep(0.001)
        try:
            t0 = time.perf_counter()
            os.write(fd, b"\n")
            return t0
        finally:
            os.close(fd)

    async def oom_latency_library(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            cid, b, fifo = self.hog()
            c = Container(cid, b, root=self.root, stdin=DEVNULL, stdout=DEVNULL)
            await c.create()
            arrived = asyncio.get_running_loop().create_future()

            released = False

            async def listen() -> None:
                async for event in c.events():
                    if isinstance(event, OOM) and not arrived.done():
                        if released:
                            arrived.set_result(time.perf_counter())
                        else:
                            arrived.set_exception(RuntimeError("out of memory before the release: raise HOG_LIMIT"))

            listener = asyncio.create_task(listen())
            await c.start()
            await asyncio.sleep(0.01)
            released = True
            t0 = await self.release(fifo)
            out.append(await asyncio.wait_for(arrived, 10) - t0)
            await c.wait()
            await c.delete()
            await asyncio.wait_for(listener, 10)
        return out

    async def oom_latency_cli(self, n: int, binary: str, root: Path) -> list[float]:
        """The same through an ``events`` process of ``binary`` (aioruntime or runc)."""
        out = []
        for _ in range(n):
            cid, b, fifo = self.hog()
            base = [binary, "--root", str(root)]
            subprocess.run([*base, "run", "-d", "-b", str(b), cid], check=True, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            events = await asyncio.create_subprocess_exec(*base, "events", "--interval", "1h", cid,
                                                          stdout=asyncio.subprocess.PIPE)
            assert events.stdout is not None
            try:
                await asyncio.sleep(0.3)  # until it has registered for OOM notifications
                t0 = await self.release(fifo)
                while json.loads(await asyncio.wait_for(events.stdout.readline(), 10))["type"] != "oom":
                    pass
                out.append(time.perf_counter() - t0)
            finally:
                subprocess.run([*base, "delete", "-f", cid], check=False, capture_output=True)
                with contextlib.suppress(ProcessLookupError):
                    events.kill()
                await events.wait()
        return out

    # -- CPU of streaming stats -----------------------------------------------------------------

    async def containers(self, count: int) -> list[Container]:
        made = []
        for _ in range(count):
            cid, b = self.bundle(["sleep", "100000"], {"memory": {"limit": 64 << 20}, "pids": {"limit": 100}})
            c = Container(cid, b, root=self.root, stdin=DEVNULL, stdout=DEVNULL)
            await c.create()
            await c.start()
            made.append(c)
        return made

    async def library_cpu(self, cs: list[Container], seconds: float) -> tuple[float, int]:
        """(% of one core, samples taken) for one stats_stream per container at 1 Hz."""
        samples = 0

        async def stream(c: Container) -> None:
            nonlocal samples
            async for _ in c.stats_stream(interval=1.0):
                samples += 1

        tasks = [asyncio.create_task(stream(c)) for c in cs]
        await asyncio.sleep(3)  # every stream open and ticking
        r0, t0, n0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), samples
        await asyncio.sleep(seconds)
        r1, t1, n1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), samples
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        return 100 * cpu / (t1 - t0), n1 - n0

    @staticmethod
    def _cpu_ticks(pids: list[int]) -> int:
        total = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime of every thread
        return total

    async def cli_cpu(self, binary: str, root: Path, ids: list[str], seconds: float) -> float:
        """% of one core for one ``binary events --interval 1s`` process per container."""
        procs = [subprocess.Popen([binary, "--root", str(root), "events", "--interval", "1s", cid],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for cid in ids]
        try:
            await asyncio.sleep(3)
            pids = [p.pid for p in procs]
            c0, t0 = self._cpu_ticks(pids), time.monotonic()
            await asyncio.sleep(seconds)
            c1, t1 = self._cpu_ticks(pids), time.monotonic()
        finally:
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()
        return 100 * (c1 - c0) / TICK / (t1 - t0)

    def runc_containers(self, count: int) -> list[str]:
        assert self.runc is not None
        ids = []
        for _ in range(count):
            cid, b = self.bundle(["sleep", "100000"], {"memory": {"limit": 64 << 20}, "pids": {"limit": 100}})
            subprocess.run([self.runc, "--root", str(self.runc_root), "run", "-d", "-b", str(b), cid], check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ids.append(cid)
        return ids

    def cleanup(self) -> None:
        for tool, root in ((self.cli, self.root), (self.runc, self.runc_root)):
            if tool and root.exists():
                for entry in root.iterdir():
                    if entry.is_dir():
                        subprocess.run([tool, "--root", str(root), "delete", "-f", entry.name],
                                       capture_output=True, check=False)
        left = remove_tree(self.parent)
        if left:
            print("warning: cgroups left behind:", *left, sep="\n  ", file=sys.stderr)


def progress(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


async def run(ns: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    bench = Bench(workdir)
    results: dict[str, Any] = {}
    try:
        progress("exit -> event")
        results["exit_to_event"] = {"library": summary(await bench.exit_latency(ns.n))}
        progress("OOM -> event")
        oom = {"library": summary(await bench.oom_latency_library(ns.n)),
               "aioruntime events": summary(await bench.oom_latency_cli(ns.n, bench.cli, bench.root))}
        if bench.runc:
            oom["runc events"] = summary(await bench.oom_latency_cli(ns.n, bench.runc, bench.runc_root))
        results["oom_to_event"] = oom

        cpu: dict[str, Any] = {}
        progress(f"stats of {ns.containers} containers")
        cs = await bench.containers(ns.containers)
        try:
            percent, samples = await bench.library_cpu(cs, ns.seconds)
            cpu["library (1 process)"] = {"cpu_percent": round(percent, 2), "samples": samples}
            cpu["aioruntime events (1 process each)"] = {
                "cpu_percent": round(await bench.cli_cpu(bench.cli, bench.root, [c.id for c in cs], ns.seconds), 2)}
        finally:
            for c in cs:
                await c.delete(force=True)
        if bench.runc:
            ids = bench.runc_containers(ns.containers)
            cpu["runc events (1 process each)"] = {
                "cpu_percent": round(await bench.cli_cpu(bench.runc, bench.runc_root, ids, ns.seconds), 2)}
        results["stats_cpu"] = {"containers": ns.containers, "seconds": ns.seconds, "interval_s": 1.0, **cpu}
    finally:
        bench.cleanup()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description="event latency and the CPU cost of streaming stats")
    parser.add_argument("-n", type=int, default=30, help="rounds per latency (default 30)")
    parser.add_argument("--containers", type=int, default=100, help="containers streaming stats (default 100)")
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU measurement window (default 20)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    ns = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: containers need it")
    with tempfile.TemporaryDirectory(prefix="aioruntime-bench-") as tmp:
        results = asyncio.run(run(ns, Path(tmp)))
    print(f"{'latency':<34}{'median ms':>11}{'p90 ms':>9}")
    for kind in ("exit_to_event", "oom_to_event"):
        for who, r in results[kind].items():
            print(f"{kind.replace('_', ' ') + ': ' + who:<34}{r['median_ms']:>11.2f}{r['p90_ms']:>9.2f}")
    s = results["stats_cpu"]
    print(f"\nstats of {s['containers']} containers at 1 Hz for {s['seconds']:g} s      % of one core")
    for who, r in s.items():
        if isinstance(r, dict):
            print(f"{who:<45}{r['cpu_percent']:>8.2f}")
    if ns.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
