"""pause and resume: freeze every process of a container, and thaw them.

``pause_begin`` starts the freeze and hands out a ``Freeze`` to wait on (an fd on
cgroup2, a retry delay on v1); ``pause_end`` closes it once done. Both touch the state
directory, so event watchers in any process learn the status changed (inotify IN_ATTRIB),
cgroup v1 having no notification of its own for freezing.
"""

from __future__ import annotations

import os
import select

from ..cgroups import freezer
from ..cgroups.freezer import Freeze
from ..cgroups.placement import locate
from ..state import Store
from ..status import require
from .lifecycle import status_of


def pause_begin(store: Store, container_id: str) -> Freeze:
    with store.lock(container_id):
        state = store.load(container_id)
        require(container_id, "pause", status_of(store, state))
        return Freeze(locate(state.cgroup_paths))


def pause_end(store: Store, container_id: str, freeze: Freeze) -> None:
    freeze.close()
    _touch(store, container_id)


def pause(store: Store, container_id: str) -> None:
    """pause_begin, a blocking wait until every process is frozen, pause_end: for the CLI."""
    f = pause_begin(store, container_id)
    try:
        while not f.done():
            select.select([f.fd] if f.fd >= 0 else [], [], [], None if f.fd >= 0 else f.retry)
    finally:
        pause_end(store, container_id, f)


def resume(store: Store, container_id: str) -> None:
    with store.lock(container_id):
        state = store.load(container_id)
        require(container_id, "resume", status_of(store, state))
        freezer.thaw(locate(state.cgroup_paths))
    _touch(store, container_id)


def _touch(store: Store, container_id: str) -> None:
    try:
        os.utime(store.dir(container_id))
    except FileNotFoundError:
        pass  # deleted meanwhile
