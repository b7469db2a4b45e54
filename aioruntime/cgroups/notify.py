"""Kernel notifications about a container, each behind one file descriptor to wait on:
inotify (cgroup2 event files, the state directory) and the cgroup v1 OOM eventfd.

Nothing here blocks or loops: the caller waits for the fd to be readable (the event loop,
or ``poll`` in the CLI) and then calls ``read``.
"""

from __future__ import annotations

import os
import struct

from .._native import ffi, lib
from .files import counters, read
from .placement import Cgroup

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_MOVED_TO = 0x80
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_IGNORED = 0x8000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class Inotify:
    """An inotify instance (non-blocking, close-on-exec)."""

    def __init__(self) -> None:
        fd = lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ffi.errno, os.strerror(ffi.errno))
        self.fd: int = fd

    def watch(self, path: str, mask: int) -> int:
        wd = lib.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ffi.errno, os.strerror(ffi.errno), path)
        return int(wd)

    def read(self) -> list[tuple[int, int, str]]:
        """The events queued now, as (watch, mask, name); [] when there are none."""
        out: list[tuple[int, int, str]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            offset = 0
            while offset < len(data):
                wd, mask, _, size = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + size].rstrip(b"\0").decode(errors="replace")
                out.append((wd, mask, name))
                offset += _EVENT.size + size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class OomWatch:
    """Out-of-memory events of a container's memory cgroup.

    v1: an eventfd registered through cgroup.event_control on memory.oom_control, signalled
    at each OOM (and when the cgroup is removed). v2: inotify on memory.events, whose
    ``oom`` and ``oom_kill`` counters grow at each OOM.
    """

    def __init__(self, cg: Cgroup) -> None:
        self._dir = cg.dirs["memory"]
        self.v2 = cg.versions["memory"] == 2
        self.gone = False
        if self.v2:
            self._notify = Inotify()
            self.fd = self._notify.fd
            try:
                self._notify.watch(os.path.join(self._dir, "memory.events"), IN_MODIFY)
                self._seen = self._count()
            except BaseException:
                self._notify.close()
                raise
            return
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        control = os.open(os.path.join(self._dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(os.path.join(self._dir, "cgroup.event_control"), "w") as f:
                f.write(f"{self.fd} {control}")
        except BaseException:
            os.close(self.fd)
            raise
        finally:
            os.close(control)  # the kernel holds its own reference once registered

    def _count(self) -> int:
        c = counters(read(os.path.join(self._dir, "memory.events")))
        return max(c.get("oom", 0), c.get("oom_kill", 0))

    def read(self) -> int:
        """How many OOM events happened since the last read (after the fd was readable);
        sets ``gone`` when the cgroup was removed instead."""
        if self.v2:
            events = self._notify.read()
            if any(mask & IN_IGNORED for _, mask, _ in events):
                self.gone = True
                return 0
            try:
                now = self._count()
            except FileNotFoundError:
                self.gone = True
                return 0
            new, self._seen = max(now - self._seen, 0), now
            return new
        try:
            n = os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0
        if not os.path.exists(os.path.join(self._dir, "cgroup.event_control")):
            self.gone = True  # the kernel signals the eventfd when the cgroup goes
            return 0
        return n

    def close(self) -> None:
        if self.v2:
            self._notify.close()
        elif self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
