"""Freezing a container's processes (pause) and thawing them (resume).

cgroup2 reports the end of a freeze: ``frozen 1`` in cgroup.events, which inotify
signals, so ``Freeze.fd`` is the descriptor to wait on. cgroup v1 has no notification;
its freezer.state reads FREEZING until every task stopped, and a task that forked
meanwhile may need the write again (runc retries too), so a v1 freeze is checked again
after ``Freeze.retry`` seconds, backing off, until a deadline.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from ..errors import CgroupError
from ..status import Freezer
from .files import counters, read, write
from .placement import Cgroup

if TYPE_CHECKING:
    from .notify import Inotify

DEADLINE = 5.0  # seconds a freeze may take before it is undone and reported


def state(cg: Cgroup) -> Freezer:
    """THAWED when the container has no freezer (or no cgroup any more)."""
    d = cg.dirs.get("freezer")
    if d is None:
        return Freezer.THAWED
    try:
        if cg.versions["freezer"] == 1:
            return Freezer(read(os.path.join(d, "freezer.state")).strip())
        if counters(read(os.path.join(d, "cgroup.events"))).get("frozen"):
            return Freezer.FROZEN
        return Freezer.FREEZING if read(os.path.join(d, "cgroup.freeze")).strip() == "1" else Freezer.THAWED
    except FileNotFoundError:
        return Freezer.THAWED


def _set(cg: Cgroup, frozen: bool) -> None:
    d = cg.dirs["freezer"]
    if cg.versions["freezer"] == 1:
        write(os.path.join(d, "freezer.state"), "FROZEN" if frozen else "THAWED")
    else:
        write(os.path.join(d, "cgroup.freeze"), "1" if frozen else "0")


def thaw(cg: Cgroup) -> None:
    if "freezer" in cg.dirs:
        _set(cg, False)


class Freeze:
    """A freeze under way: wait until ``fd`` is readable (or ``retry`` seconds when ``fd``
    is -1), then ask ``done()``; ``close()`` in the end."""

    def __init__(self, cg: Cgroup) -> None:
        if "freezer" not in cg.dirs:
            raise CgroupError("cannot pause: no freezer (no cgroup v1 freezer hierarchy and no cgroup v2)")
        self._cg = cg
        self._notify: Inotify | None = None
        self.fd = -1
        self.retry = 0.001
        self._deadline = time.monotonic() + DEADLINE
        if cg.versions["freezer"] == 2:
            from .notify import IN_MODIFY, Inotify  # the compiled module: not for ``state`` callers

            self._notify = Inotify()
            self.fd = self._notify.fd
            try:
                self._notify.watch(os.path.join(cg.dirs["freezer"], "cgroup.events"), IN_MODIFY)
            except BaseException:
                self.close()
                raise
        _set(cg, True)

    def done(self) -> bool:
        """Whether every process is frozen; past the deadline, thaw and raise CgroupError."""
        if self._notify is not None:
            self._notify.read()
        now = state(self._cg)
        if now is Freezer.FROZEN:
            return True
        if time.monotonic() > self._deadline:
            thaw(self._cg)
            raise CgroupError(f"unable to freeze the container within {DEADLINE:g} s (its processes keep forking?); thawed it")
        if self._notify is None:
            _set(self._cg, True)  # v1: tasks forked since the last write are caught by this one
            self.retry = min(self.retry * 2, 0.1)
        return False

    def close(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None
            self.fd = -1
