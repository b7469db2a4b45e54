"""Exec benchmark: the round trip of ``exec /bin/true`` (start it in a running container,
wait for it to exit) through the aioruntime library, ``aioruntime exec``, ``runc exec``
and ``crun exec``.

Each runtime gets one running busybox container (``sleep``) from the same rootfs; the
rounds are interleaved so that machine load weighs on all of them alike, and the median
and p90 per runtime and the ratio to crun's median are printed. Run as root from the
repository, with the project's venv::

    sudo .venv/bin/python benchmarks/exec.py [-n 100] [--json]

Everything it makes (the containers, state roots, bundles, the cgroup parent
``/aioruntime-bench-<pid>`` and a hugetlb v1 mount if crun needs one) is removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lifecycle import arguments, parse, report, summarize, workspace  # noqa: E402

from tools.busybox_rootfs import build_rootfs, make_bundle  # noqa: E402
from tools.cgroup_tree import remove_tree  # noqa: E402

TRUE = ["/bin/true"]


@dataclass
class Runtime:
    """One runtime's running container; ``exec()`` runs /bin/true in it and waits."""

    name: str
    exec: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]
    samples: list[float] = field(default_factory=list)


def _check(proc: subprocess.CompletedProcess[bytes]) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args[0]} {proc.args[3]}: exit status {proc.returncode}: {proc.stderr.decode().strip()}")


async def cli_runtime(name: str, binary: str, bundle: Path, root: Path, cid: str) -> Runtime:
    def call(*args: str) -> subprocess.CompletedProcess[bytes]:
        # blocking on purpose: the loop has nothing else to do, and it times the process alone;
        # errors into a file, not a pipe, which the container of "run -d" would hold open
        with tempfile.TemporaryFile() as err:
            proc = subprocess.run([binary, "--root", str(root), *args], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err, check=False)
            err.seek(0)
            proc.stderr = err.read()
        return proc

    _check(call("run", "-d", "-b", str(bundle), cid))

    async def exec_() -> None:
        _check(call("exec", cid, *TRUE))

    async def stop() -> None:
        call("delete", "-f", cid)

    return Runtime(name, exec_, stop)


async def library_runtime(bundle: Path, root: Path, cid: str) -> Runtime:
    from aioruntime import DEVNULL, Container

    c = Container(cid, bundle, root=root, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
    await c.create()
    await c.start()

    async def exec_() -> None:
        code = await (await c.exec(TRUE)).wait()
        if code != 0:
            raise RuntimeError(f"exit status {code}")

    async def stop() -> None:
        await c.delete(force=True)

    return Runtime("aioruntime (library)", exec_, stop)


async def bench(n: int, warmup: int, workdir: Path, cli: str) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    rootfs = build_rootfs(workdir / "rootfs")
    parent = f"aioruntime-bench-{os.getpid()}"

    def bundle(name: str) -> Path:
        return make_bundle(workdir / f"bundle-{name}", rootfs, ["sleep", "1000000"], cgroups_path=f"/{parent}/{name}")

    skipped: dict[str, str] = {}
    runtimes: list[Runtime] = []
    cid = f"bench-exec-{os.getpid()}"
    try:
        try:
            runtimes.append(await library_runtime(bundle("library"), workdir / "state-library", cid))
        except Exception as e:
            skipped["aioruntime (library)"] = str(e)
        for name, binary in (("aioruntime exec", cli), ("runc exec", shutil.which("runc")),
                             ("crun exec", shutil.which("crun"))):
            if not binary:
                skipped[name] = "not installed"
                continue
            tag = name.split()[0]
            try:
                runtimes.append(await cli_runtime(name, binary, bundle(tag), workdir / f"state-{tag}", cid))
            except Exception as e:
                skipped[name] = str(e)
        for rnd in range(warmup + n):
            shift = rnd % max(len(runtimes), 1)
            for rt in runtimes[shift:] + runtimes[:shift]:
                t0 = time.perf_counter()
                await rt.exec()
                if rnd >= warmup:
                    rt.samples.append((time.perf_counter() - t0) * 1000)
    finally:
        for rt in runtimes:
            await rt.stop()
        left = remove_tree(parent)
        if left:
            print("warning: cgroups left behind:", *left, sep="\n  ", file=sys.stderr)

    return summarize({rt.name: rt.samples for rt in runtimes}, "crun exec"), skipped


def main() -> int:
    parser = arguments("exec /bin/true in a running container, per runtime", 100, 5)
    parser.add_argument("--cli", metavar="PATH", help="the aioruntime command to time (default: the venv's)")
    ns = parse(parser)
    cli = ns.cli or str(Path(sys.executable).parent / "aioruntime")
    if not os.access(cli, os.X_OK):
        cli = shutil.which("aioruntime") or ""
    with workspace() as workdir:
        results, skipped = asyncio.run(bench(ns.n, ns.warmup, workdir, cli))
    report(results, skipped, ns.n, "", ns.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
