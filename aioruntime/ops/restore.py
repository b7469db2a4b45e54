"""restore: a container from CRIU images, under a new or the old id, from a bundle.

Like ``create`` it reserves the id and makes the bundle's cgroups first; CRIU then
rebuilds the namespaces and processes, binding the runtime's external mounts from this
bundle and these cgroups, and hands the init the stdio it is given in place of what it had.
CRIU forks the init as our child (``rst_sibling``), so the caller reaps it as a created one.
Any failure removes every trace: processes, cgroups, the state directory.
"""


import ctypes
import json
import os
import posixpath
import signal
from typing import NamedTuple

from .. import hooks
from .. import plan as planning
from ..cgroups import paths as cgroups
from ..cgroups.mounts import hierarchies, unescape
from ..cgroups.resources import apply_config
from ..criu import external, version
from ..criu import rpc_pb2 as rpc
from ..criu.opts import cgroup_mode, common, open_dir, with_log
from ..criu.swrk import Swrk
from ..errors import CheckpointNotFoundError, CriuError
from ..spec import Spec, load
from ..state import State, Store, check_id
from ..status import Status, process_start_time
from ..waits import Run
from .create import now_rfc3339
from .lifecycle import oci_state

RESTORE_LOG = "restore.log"
_MNT_DETACH = 2


class RestoreOptions(NamedTuple):
    """runc's restore flags; ``work_path`` gets CRIU's log, else the image directory does."""

    image_path: str
    work_path: str | None = None
    tcp_established: bool = False
    ext_unix_sk: bool = False
    shell_job: bool = False
    file_locks: bool = False
    manage_cgroups_mode: str | None = None


class Restored(NamedTuple):
    state: State
    pidfd: int  # on the restored init, our child: the caller reaps through it and closes it


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _cgroup_roots(cgroup_paths: dict[str, str]) -> list[tuple[str, str]]:
    """(controllers, cgroup as /proc/PID/cgroup names it) per hierarchy: where CRIU puts
    the tree back, whatever cgroup it was dumped from ("" is the cgroup2 hierarchy)."""
    out = []
    for h in hierarchies():
        if h.mountpoint in cgroup_paths:
            inner = posixpath.join(h.root, posixpath.relpath(cgroup_paths[h.mountpoint], h.mountpoint))
            out.append((",".join(h.controllers), inner))
    return out


def _open_images(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CheckpointNotFoundError(path, "no such directory") from None
    except NotADirectoryError:
        raise CheckpointNotFoundError(path, "not a directory") from None
    if not os.path.exists(os.path.join(path, "inventory.img")):
        os.close(fd)
        raise CheckpointNotFoundError(path, "no inventory.img (make one with checkpoint --image-path)")
    return fd


def restore(
    store: Store,
    container_id: str,
    bundle: str | os.PathLike[str],
    options: RestoreOptions,
    *,
    stdio: tuple[int, int, int] = (-1, -1, -1),
    criu: str | None = None,
) -> Run[Restored]:
    """Restore the checkpoint in ``options.image_path`` as container ``container_id``;
    ``stdio`` (-1: ours) replaces the pipes and outside files the init had as fds 0-2."""
    check_id(container_id)
    criu_path = version.locate(criu)
    mode = cgroup_mode(options.manage_cgroups_mode)
    images = _open_images(options.image_path)
    bundle = os.path.abspath(os.fspath(bundle))
    work = dir_fd = -1
    root = ""
    swrk: Swrk | None = None
    init_pidfd = -1
    state: State | None = None
    try:
        with open(os.path.join(options.image_path, external.DESCRIPTORS)) as f:
            descriptors: list[str] = json.load(f)
        spec = load(bundle)
        assert spec.root is not None  # load() validates
        paths = cgroups.resolve(spec.linux.cgroups_path, container_id)
        work = open_dir(options.work_path) if options.work_path else -1
        dir_fd = store.reserve(container_id)
        state = State(
            id=container_id,
            bundle=bundle,
            rootfs=posixpath.normpath(os.path.join(bundle, spec.root.path)),
            created=now_rfc3339(),
            config=spec.to_dict(),
            cgroup_paths=paths,
            annotations=dict(spec.annotations),
        )
        state = state._replace(cgroups_made=tuple(cgroups.create(paths)))
        apply_config(spec, paths)  # as runc: the bundle's limits hold before CRIU puts the processes back
        store.save(state)  # from here a crash leaves a "creating" entry delete -f cleans
        # CRIU wants the root a mount point whose parent is not overmounted: a bind of the rootfs
        root = os.path.join(store.dir(container_id), "criu-root")
        os.mkdir(root)
        _libc_call("mount", state.rootfs.encode(), root.encode(), None, planning.MS_BIND | planning.MS_REC, None)

        opts = common(images, work, RESTORE_LOG, mode, options)
        opts.root = root
        opts.rst_sibling = True  # the init is forked as our child, not criu's
        opts.evasive_devices = True
        for key, val in external.restore_mounts(spec, bundle, paths):
            opts.ext_mnt.add(key=key, val=val)
        for ctrl, path in _cgroup_roots(paths):
            opts.cg_root.add(ctrl=ctrl, path=path)
        for fd, name in enumerate(descriptors):
            if name.startswith(external.SUBSTITUTABLE):
                opts.inherit_fd.add(key=name, fd=fd)  # criu's fd: it passes its own stdio on

        def on_notify(notify: rpc.criu_notify, fds: list[int]) -> Run[None] | None:
            nonlocal init_pidfd
            if notify.script != "setup-namespaces" or init_pidfd >= 0:
                return None
            init_pidfd = os.pidfd_open(notify.pid)  # to reap it should the restore fail
            return _runtime_hooks(store, state, spec, notify.pid)

        swrk = Swrk(criu_path, stdio=stdio)
        yield from version.check(swrk, criu_path)
        try:
            answer = yield from swrk.call(rpc.criu_req(type=rpc.RESTORE, opts=opts), on_notify)
        except CriuError as e:
            raise with_log(e, os.path.join(options.work_path or options.image_path, RESTORE_LOG)) from None
        pid = answer.restore.pid
        if init_pidfd < 0:
            init_pidfd = os.pidfd_open(pid)
        yield from swrk.finish()
        swrk = None
        state = state._replace(pid=pid, pid_start=process_start_time(pid) or 0)
        store.save(state)
    except BaseException:
        if swrk is not None:
            swrk.kill()
            _unmount_yards(options.image_path, options.work_path)
        _undo(store, container_id, state, dir_fd, init_pidfd)
        raise
    finally:
        if root:
            _unmount(root)
        os.close(images)
        if work >= 0:
            os.close(work)
    os.close(dir_fd)
    return Restored(state, init_pidfd)


def _runtime_hooks(store: Store, state: State | None, spec: Spec, pid: int) -> Run[None] | None:
    """As runc: the prestart and createRuntime hooks once CRIU has made the namespaces of the
    restored init (its host ``pid``), before it runs; a failure fails the restore."""
    if not (spec.hooks.prestart or spec.hooks.create_runtime) or state is None:
        return None
    doc = {**oci_state(store, state, Status.CREATING), "pid": pid}

    def run() -> Run[None]:
        yield from hooks.run("prestart", spec.hooks.prestart, {**doc, "status": Status.CREATED.value})
        yield from hooks.run("createRuntime", spec.hooks.create_runtime, doc)

    return run()


def _unmount_yards(*dirs: str | None) -> None:
    """A criu killed mid-restore (an error, a cancellation) leaves the cgroup yard it mounts
    in its work directory (``.criu.cgyard.XXXXXX``: a tmpfs holding every hierarchy)."""
    where = {os.path.realpath(d) for d in dirs if d}
    with open("/proc/self/mountinfo") as f:
        points = [unescape(line.split()[4]) for line in f]
    for p in points:
        if os.path.dirname(p) in where and os.path.basename(p).startswith(".criu.cgyard."):
            _unmount(p)  # detached with everything under it


def _unmount(root: str) -> None:
    try:
        _libc_call("umount2", root.encode(), _MNT_DETACH)
    except OSError:
        pass  # never mounted
    try:
        os.rmdir(root)
    except FileNotFoundError:
        pass


def _undo(store: Store, container_id: str, state: State | None, dir_fd: int, init_pidfd: int) -> None:
    """Kill and reap what CRIU restored, remove the cgroups and the state directory."""
    if state is not None:
        cgroups.kill_all(state.cgroup_paths)
    if init_pidfd >= 0:
        try:
            signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitid(os.P_PIDFD, init_pidfd, os.WEXITED)
        except ChildProcessError:
            pass
        os.close(init_pidfd)
    if state is not None:
        cgroups.remove(state.cgroups_made)
    if dir_fd >= 0:
        _unmount(os.path.join(store.dir(container_id), "criu-root"))
        os.close(dir_fd)
        store.remove(container_id)
