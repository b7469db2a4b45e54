"""Command-line benchmark: each subcommand a container manager calls, per runtime.

Every round gives each runtime (``aioruntime``, ``runc``, ``crun``; interleaved, the
order rotating) a fresh busybox container and times its calls one by one:
``create``, ``start``, ``state``, ``exec`` (of ``true``), ``ps --format json``, ``pause``, ``resume``,
``update --pids-limit``, ``list``, ``kill KILL``, ``delete``, and ``run`` of ``/bin/true``.
It prints each subcommand's median per runtime and aioruntime's ratio to runc's and crun's.
Run as root from the repository, with the project's venv::

    sudo .venv/bin/python benchmarks/cli.py [-n 30] [--json]

``AIORUNTIME_CLI=/path/to/aioruntime`` times another build of the command (a worktree's
front end) instead of the venv's.

Everything it makes (state roots, bundles, the cgroup parent ``/aioruntime-bench-<pid>``,
a hugetlb v1 mount for crun) is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lifecycle import arguments, parse, workspace  # noqa: E402

from tools.busybox_rootfs import build_rootfs, make_bundle  # noqa: E402
from tools.cgroup_tree import remove_tree  # noqa: E402

STEPS = ["create", "start", "state", "exec", "ps", "pause", "resume", "update", "list", "kill", "delete", "run"]


def call(argv: list[str]) -> float:
    """Milliseconds ``argv`` took; raises with its stderr if it failed. stderr goes to a file:
    a container's init inherits it, and a pipe would stay open as long as the container."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, check=False)
        ms = (time.perf_counter() - t0) * 1000
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(argv[3:])}: exit {proc.returncode}: {err.read().decode().strip()[-300:]}")
    return ms


def stopped(binary: str, root: str, cid: str) -> None:
    """Wait (untimed) until the killed container's init is gone."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run([binary, "--root", root, "state", cid], capture_output=True, check=False).stdout
        if out and json.loads(out)["status"] == "stopped":
            return
        time.sleep(0.005)
    raise RuntimeError(f"{cid} did not stop")


def one_round(binary: str, root: str, workdir: Path, rootfs: Path, cid: str, parent: str) -> dict[str, float]:
    sleeper = make_bundle(workdir / f"bundle-{cid}", rootfs, ["sleep", "1000"], cgroups_path=f"/{parent}/{cid}")
    true = make_bundle(workdir / f"bundle-{cid}-run", rootfs, ["/bin/true"], cgroups_path=f"/{parent}/{cid}-run")
    rt = [binary, "--root", root]
    times: dict[str, float] = {}
    try:
        times["create"] = call([*rt, "create", "-b", str(sleeper), cid])
        times["start"] = call([*rt, "start", cid])
        times["state"] = call([*rt, "state", cid])
        times["exec"] = call([*rt, "exec", cid, "true"])
        times["ps"] = call([*rt, "ps", "--format", "json", cid])  # as containerd's shim calls it
        times["pause"] = call([*rt, "pause", cid])
        times["resume"] = call([*rt, "resume", cid])
        times["update"] = call([*rt, "update", "--pids-limit", "100", cid])
        times["list"] = call([*rt, "list"])
        times["kill"] = call([*rt, "kill", cid, "KILL"])
        stopped(binary, root, cid)
        times["delete"] = call([*rt, "delete", cid])
        times["run"] = call([*rt, "run", "-b", str(true), cid + "-run"])
    finally:
        for c in (cid, cid + "-run"):
            subprocess.run([*rt, "delete", "-f", c], capture_output=True, check=False)
        shutil.rmtree(sleeper)
        shutil.rmtree(true)
    return times


def main() -> int:
    ns = parse(arguments("each CLI subcommand, per runtime", 30, 2))
    cli = os.environ.get("AIORUNTIME_CLI") or str(Path(sys.executable).parent / "aioruntime")
    runtimes = {"aioruntime": cli, "runc": shutil.which("runc"), "crun": shutil.which("crun")}
    found = {name: b for name, b in runtimes.items() if b}
    samples: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STEPS} for name in found}
    parent = f"aioruntime-bench-{os.getpid()}"
    with workspace() as workdir:
        rootfs = build_rootfs(workdir / "rootfs")
        names = list(found)
        try:
            for rnd in range(ns.warmup + ns.n):
                shift = rnd % len(names)
                for name in names[shift:] + names[:shift]:
                    cid = f"bench-{os.getpid()}-{rnd}-{name}"
                    times = one_round(found[name], str(workdir / "state" / name), workdir, rootfs, cid, parent)
                    if rnd >= ns.warmup:
                        for step, ms in times.items():
                            samples[name][step].append(ms)
        finally:
            left = remove_tree(parent)
            if left:
                print("warning: cgroups left behind:", *left, sep="\n  ", file=sys.stderr)
    medians = {name: {s: statistics.median(v) for s, v in steps.items()} for name, steps in samples.items()}
    for name in runtimes:
        if name not in found:
            print(f"skipped {name}: not installed", file=sys.stderr)
    head = "".join(f"{name + ' ms':>15}" for name in medians)
    print(f"{'subcommand':<12}{head}{'vs runc':>10}{'vs crun':>10}   (medians, n={ns.n})")
    for step in STEPS:
        row = "".join(f"{medians[name][step]:>15.2f}" for name in medians)
        ours = medians["aioruntime"][step]
        ratios = "".join(f"{ours / medians[r][step]:>9.2f}x" if r in medians else f"{'-':>10}" for r in ("runc", "crun"))
        print(f"{step:<12}{row}{ratios}")
    if ns.json:
        print(json.dumps({"n": ns.n, "medians_ms": medians, "samples_ms": samples}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
