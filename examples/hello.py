"""The smallest program that runs a container.

    sudo .venv/bin/python examples/hello.py [BUNDLE]

Without BUNDLE it builds a busybox bundle in a temporary directory first.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from aioruntime import Container

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.busybox_rootfs import build_rootfs, make_bundle  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = sys.argv[1] if len(sys.argv) > 1 else make_bundle(
            tmp, build_rootfs(Path(tmp) / "rootfs"), ["echo", "hello from a container"])
        status = asyncio.run(Container("hello", bundle).run())  # create, start, wait, delete
    print(f"exit status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
