"""Which criu to run, and whether it is new enough for this kernel."""

from __future__ import annotations

import os
import re
import shutil

from ..errors import CriuError
from . import rpc_pb2 as rpc
from ..waits import Run
from .swrk import Swrk

INSTALL_HINT = "tools/install-criu.sh in aioruntime's source builds one"


def minimum(kernel_release: str | None = None) -> tuple[int, int]:
    """The oldest CRIU that works here: from Linux 6.16 CRIU must not ask a TCP socket for
    SO_PASSCRED (4.2); from 6.13 it must know the new vDSO layout (4.1); before, 3.15
    (external pid namespaces, the cgroup2 freezer)."""
    found = re.match(r"(\d+)\.(\d+)", kernel_release or os.uname().release)
    kernel = (int(found[1]), int(found[2])) if found else (0, 0)
    if kernel >= (6, 16):
        return (4, 2)
    return (4, 1) if kernel >= (6, 13) else (3, 15)


# where tools/install-criu.sh puts the CRIU it builds (its default cache)
INSTALLED = "/var/cache/aioruntime/criu/bin/criu"


def locate(criu: str | None = None) -> str:
    """The criu to run: ``criu`` if given, else $AIORUNTIME_CRIU, else the one
    tools/install-criu.sh installed, else ``criu`` on PATH (a distribution's may be too
    old for the kernel: container managers put their own first on PATH)."""
    name = criu or os.environ.get("AIORUNTIME_CRIU") or (INSTALLED if os.access(INSTALLED, os.X_OK) else "criu")
    path = shutil.which(name)
    if path is None:
        where = name if os.sep in name else f"{name!r} on PATH"
        raise CriuError(f"criu not found ({where}): checkpoint and restore need CRIU "
                        f"{'.'.join(map(str, minimum()))} or later; {INSTALL_HINT}")
    return path


def check(swrk: Swrk, path: str) -> Run[tuple[int, int, int]]:
    """Ask the session's criu its version (keeping the session open); raise if too old."""
    answer = yield from swrk.call(rpc.criu_req(type=rpc.VERSION, keep_open=True))
    v = answer.version
    found = (v.major_number, v.minor_number, v.sublevel)
    need = minimum()
    if found[:2] < need:
        raise CriuError(
            f"criu {'.'.join(map(str, found))} at {path} is too old for Linux {os.uname().release}: "
            f"need {'.'.join(map(str, need))} or later; {INSTALL_HINT} (pass it with --criu PATH, "
            "criu=PATH or AIORUNTIME_CRIU)"
        )
    return found


def require_memory_tracking(swrk: Swrk) -> Run[None]:
    """A pre-dump (and a dump on top of one) needs the kernel to track changed pages."""
    answer = yield from swrk.call(
        rpc.criu_req(type=rpc.FEATURE_CHECK, features=rpc.criu_features(mem_track=True), keep_open=True)
    )
    if not answer.features.mem_track:
        raise CriuError(
            "pre-dump needs memory change tracking, which this kernel lacks (CONFIG_MEM_SOFT_DIRTY): "
            "checkpoint without --pre-dump and --parent-path"
        )
