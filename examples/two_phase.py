"""Run a container step by step, streaming its output while it runs.

    sudo .venv/bin/python examples/two_phase.py [BUNDLE]

Without BUNDLE it builds a busybox bundle (in a temporary directory) that prints a
line every 0.3 s, so the lines can be seen arriving one by one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from aioruntime import PIPE, Container

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.busybox_rootfs import build_rootfs, make_bundle  # noqa: E402


async def two_phase(bundle: str | os.PathLike[str]) -> int:
    c = Container("two-phase", bundle, stdout=PIPE)
    await c.create()  # the init waits in its new namespaces: "created"
    print(f"{c.state()['status']}, init pid {c.state()['pid']}")
    await c.start()  # the init execs the bundle's process: "running"
    assert c.stdout is not None
    t0 = time.monotonic()
    async for line in c.stdout:  # each line as soon as the container writes it
        print(f"{time.monotonic() - t0:5.2f}s  {line.decode().rstrip()}")
    status = await c.wait()  # "stopped"; an int because this process created (and reaped) it
    assert status is not None
    await c.delete()  # state, cgroups and the rest are gone
    return status


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = sys.argv[1] if len(sys.argv) > 1 else make_bundle(
            tmp, build_rootfs(Path(tmp) / "rootfs"),
            ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done"])
        status = asyncio.run(two_phase(bundle))
    print(f"exit status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
