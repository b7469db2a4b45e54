"""Container lifecycle benchmark: create + start + wait + delete of ``/bin/true``.

Runs the same busybox bundle N times through the aioruntime library, ``aioruntime run``,
``runc run`` and ``crun run``, interleaved round by round so that machine load weighs on
all of them alike, and prints the median and p90 per runtime and the ratio to crun's
median. Run as root from the repository, with the project's venv::

    sudo .venv/bin/python benchmarks/lifecycle.py [-n 50] [--json]

Everything it makes (state roots, bundle, the cgroup parent ``/aioruntime-bench-<pid>``,
and a hugetlb v1 mount if crun needs one) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.busybox_rootfs import build_rootfs, make_bundle  # noqa: E402
from tools.cgroup_tree import cgroup_mounts, remove_tree  # noqa: E402

CGROUP_FS = Path("/sys/fs/cgroup")


@dataclass
class Runtime:
    """One way of running a container; ``run(id, root)`` returns when it is deleted."""

    name: str
    run: Callable[[str, Path], Awaitable[None]]
    cleanup: Callable[[str, Path], None]
    samples: list[float] = field(default_factory=list)


@contextlib.contextmanager
def hugetlb_on_v1() -> Iterator[None]:
    """crun refuses a hybrid layout while a controller (here hugetlb) sits on cgroup2:
    mount hugetlb's v1 hierarchy for the benchmark if no v1 mount holds it, and undo
    exactly that afterwards."""
    if any(m.fstype == "cgroup" and "hugetlb" in m.options for m in cgroup_mounts()):
        yield
        return
    target = CGROUP_FS / "hugetlb"
    created = not target.exists()
    target.mkdir(exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(target)], check=True)
    except BaseException:
        if created:
            target.rmdir()
        raise
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=True)
        if created:
            target.rmdir()


def cli_runtime(name: str, binary: str, bundle: Path) -> Runtime:
    async def run(cid: str, root: Path) -> None:
        # Blocking on purpose: the loop has nothing else to do, and it times the process alone.
        proc = subprocess.run(  # noqa: ASYNC221
            [binary, "--root", str(root), "run", "-b", str(bundle), cid],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"exit status {proc.returncode}: {proc.stderr.decode().strip()}")

    def cleanup(cid: str, root: Path) -> None:
        subprocess.run([binary, "--root", str(root), "delete", "-f", cid],
                       stdin=subprocess.DEVNULL, capture_output=True, check=False)

    return Runtime(name, run, cleanup)


def library_runtime(bundle: Path, cli: str | None) -> Runtime | str:
    """The in-process runtime, or why it is not available."""
    try:
        from aioruntime import Container
    except ImportError as e:
        return f"library not importable: {e}"

    async def run(cid: str, root: Path) -> None:
        c = Container(cid, bundle, root=root, stdin=asyncio.subprocess.DEVNULL,
                      stdout=asyncio.subprocess.DEVNULL)
        code = await c.run()
        if (root / cid).exists():  # run() left deleting to us
            await c.delete()
        if code != 0:
            raise RuntimeError(f"exit status {code}")

    def cleanup(cid: str, root: Path) -> None:
        if cli:
            subprocess.run([cli, "--root", str(root), "delete", "-f", cid],
                           stdin=subprocess.DEVNULL, capture_output=True, check=False)

    return Runtime("aioruntime (library)", run, cleanup)


def p90(samples: list[float]) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


async def bench(n: int, warmup: int, workdir: Path, gap: float = 0.0) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    rootfs = build_rootfs(workdir / "rootfs")
    bundle = workdir / "bundle"
    parent = f"aioruntime-bench-{os.getpid()}"
    cli = str(Path(sys.executable).parent / "aioruntime")
    if not os.access(cli, os.X_OK):
        cli = shutil.which("aioruntime") or ""

    found: dict[str, Runtime | str] = {"aioruntime (library)": library_runtime(bundle, cli or None)}
    for name, binary in (("aioruntime run", cli), ("runc run", shutil.which("runc")),
                         ("crun run", shutil.which("crun"))):
        found[name] = cli_runtime(name, binary, bundle) if binary else f"{name.split()[0]} not installed"
    runtimes = [rt for rt in found.values() if isinstance(rt, Runtime)]
    skipped = {name: rt for name, rt in found.items() if isinstance(rt, str)}

    def root_of(rt: Runtime) -> Path:
        return workdir / "state" / "".join(ch if ch.isalnum() else "-" for ch in rt.name)

    everyone, counter = list(runtimes), 0
    try:
        for rnd in range(warmup + n):
            shift = rnd % max(len(runtimes), 1)
            for rt in runtimes[shift:] + runtimes[:shift]:
                counter += 1
                cid = f"bench-{os.getpid()}-{counter}"
                root = root_of(rt)
                make_bundle(bundle, rootfs, ["/bin/true"], cgroups_path=f"/{parent}/{cid}")
                if gap:
                    # a quiet spell, as between a manager's calls: the kernel's cgroup-migration
                    # lock cools down, and every runtime pays its grace period again
                    await asyncio.sleep(gap)
                t0 = time.perf_counter()
                try:
                    await rt.run(cid, root)
                except Exception as e:
                    rt.cleanup(cid, root)
                    if rnd >= warmup:
                        raise RuntimeError(f"{rt.name} failed in round {rnd - warmup}: {e}") from e
                    skipped[rt.name] = f"failed in warm-up: {e}"
                    runtimes.remove(rt)
                    continue
                if rnd >= warmup:
                    rt.samples.append((time.perf_counter() - t0) * 1000)
    finally:
        for rt in everyone:  # a runtime that does not delete its containers is noticed
            for entry in root_of(rt).glob("*"):
                print(f"warning: {rt.name} left {entry.name} in its state root", file=sys.stderr)
                rt.cleanup(entry.name, root_of(rt))
        left = remove_tree(parent)
        if left:
            print("warning: cgroups left behind:", *left, sep="\n  ", file=sys.stderr)

    return summarize({rt.name: rt.samples for rt in runtimes}, "crun run"), skipped


def summarize(samples: dict[str, list[float]], baseline: str) -> dict[str, dict[str, object]]:
    """Per runtime: median, p90 and the ratio of its median to ``baseline``'s (None if that did not run)."""
    base = statistics.median(samples[baseline]) if baseline in samples else None
    results: dict[str, dict[str, object]] = {}
    for name, ms in samples.items():
        med = statistics.median(ms)
        results[name] = {
            "median_ms": round(med, 3), "p90_ms": round(p90(ms), 3),
            "ratio_to_crun": round(med / base, 3) if base else None,
            "samples_ms": [round(s, 3) for s in ms],
        }
    return results


def report(results: dict[str, dict[str, object]], skipped: dict[str, str], n: int, note: str, as_json: bool) -> None:
    """The table (and with ``as_json`` the JSON) on stdout, the skipped runtimes on stderr."""
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(f"{'runtime':<22}{'median ms':>11}{'p90 ms':>9}{'vs crun':>9}   (n={n}{note})")
    for name, r in results.items():
        ratio = r["ratio_to_crun"]
        shown = f"{ratio:.2f}x" if isinstance(ratio, float) else "-"
        print(f"{name:<22}{r['median_ms']:>11.2f}{r['p90_ms']:>9.2f}{shown:>9}")
    if as_json:
        print(json.dumps({"n": n, "results": results, "skipped": skipped}, indent=2))


def arguments(description: str, n: int, warmup: int) -> argparse.ArgumentParser:
    """The options every benchmark takes; ``parse`` checks them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-n", type=int, default=n, help=f"measured rounds (default {n})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"unmeasured rounds first (default {warmup})")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    ns = parser.parse_args()
    if ns.n < 1:
        parser.error("-n must be at least 1")
    if os.geteuid() != 0:
        parser.error("run as root: containers need it")
    return ns


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A temporary directory, and hugetlb on a v1 mount for crun meanwhile if it is installed."""
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aioruntime-bench-")))
        if shutil.which("crun"):
            stack.enter_context(hugetlb_on_v1())
        yield workdir


def main() -> int:
    parser = arguments("create+start+wait+delete of /bin/true, per runtime", 50, 3)
    parser.add_argument("--gap", type=float, default=0.0, metavar="MS",
                        help="idle milliseconds before each run (default 0: back to back)")
    ns = parse(parser)
    with workspace() as workdir:
        results, skipped = asyncio.run(bench(ns.n, ns.warmup, workdir, ns.gap / 1000))
    report(results, skipped, ns.n, f", gap {ns.gap:g} ms", ns.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
