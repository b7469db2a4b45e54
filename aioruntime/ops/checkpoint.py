"""checkpoint: a running container's processes to CRIU images in a directory.

Unless left running (or only pre-dumped), CRIU kills the processes once they are on disk
and the caller deletes the container, as runc does: the images are all that is left, and
``restore`` makes a container of them again, under this id or another.
"""


import json
import os
from typing import NamedTuple

from ..cgroups.mounts import hierarchies
from ..criu import external, version
from ..criu import rpc_pb2 as rpc
from ..criu.opts import cgroup_mode, common, open_dir, with_log
from ..criu.swrk import Swrk
from ..errors import CriuError
from ..spec import Spec
from ..state import Store
from ..status import require
from ..waits import Run
from .lifecycle import status_of

DUMP_LOG = "dump.log"


class CheckpointOptions(NamedTuple):
    """runc's checkpoint flags. ``parent_path`` is relative to ``image_path`` (a pre-dump's
    images); ``work_path`` gets CRIU's log, else the image directory does."""

    image_path: str
    work_path: str | None = None
    leave_running: bool = False
    tcp_established: bool = False
    ext_unix_sk: bool = False
    shell_job: bool = False
    file_locks: bool = False
    pre_dump: bool = False
    parent_path: str | None = None
    manage_cgroups_mode: str | None = None  # soft, full, strict or ignore; None: CRIU's default


def _freezer(cgroup_paths: dict[str, str]) -> str | None:
    """The container's v1 freezer cgroup: CRIU freezes the whole tree there instead of
    seizing task by task (which a forking process could outrun)."""
    for h in hierarchies():
        if "freezer" in h.controllers and h.mountpoint in cgroup_paths:
            return cgroup_paths[h.mountpoint]
    return None


def _thaw(freezer: str) -> None:
    try:
        with open(os.path.join(freezer, "freezer.state"), "w") as f:
            f.write("THAWED")
    except OSError:
        pass  # the cgroup is gone with the container


def checkpoint(store: Store, container_id: str, options: CheckpointOptions, *, criu: str | None = None) -> Run[bool]:
    """Dump the container with CRIU; True when its processes are gone (delete it next)."""
    criu_path = version.locate(criu)
    mode = cgroup_mode(options.manage_cgroups_mode)
    with store.lock(container_id):
        state = store.load(container_id)
        require(container_id, "checkpoint", status_of(store, state))
        spec = Spec.from_dict(state.config)
        images = open_dir(options.image_path)
        work = open_dir(options.work_path) if options.work_path else -1
        try:
            opts = common(images, work, DUMP_LOG, mode, options)
            opts.root = state.rootfs
            opts.pid = state.pid
            opts.leave_running = options.leave_running
            freezer = _freezer(state.cgroup_paths)
            if freezer is not None:
                opts.freeze_cgroup = freezer
            if options.parent_path:
                opts.parent_img = options.parent_path
                opts.track_mem = True
            if not options.pre_dump:  # a pre-dump holds memory only
                for key, val in external.dump_mounts(spec, state.bundle, state.cgroup_paths, state.pid):
                    opts.ext_mnt.add(key=key, val=val)
                descriptors = external.stdio(state.pid)
                opts.external.extend(d for d in descriptors if d.startswith("file["))
                with open(os.path.join(options.image_path, external.DESCRIPTORS), "w") as f:
                    json.dump(descriptors, f)
            request = rpc.criu_req(type=rpc.PRE_DUMP if options.pre_dump else rpc.DUMP, opts=opts)
            swrk = Swrk(criu_path)
            try:
                yield from version.check(swrk, criu_path)
                if options.pre_dump or options.parent_path:
                    yield from version.require_memory_tracking(swrk)
                yield from swrk.call(request)
                yield from swrk.finish()
            except BaseException as e:
                swrk.kill()
                if freezer is not None:
                    _thaw(freezer)  # criu killed while the tree was frozen
                if isinstance(e, CriuError):
                    raise with_log(e, os.path.join(options.work_path or options.image_path, DUMP_LOG)) from None
                raise
        finally:
            os.close(images)
            if work >= 0:
                os.close(work)
    return not (options.leave_running or options.pre_dump)

