"""Start a container init through the compiled ``aio_spawn`` and read what it reports."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

from ._native import ffi as _ffi
from ._native import lib as _lib
from .errors import CgroupError, SpawnError
from .plan import Plan, WaitGoStep, encode, last_cap
from .spec import IDMapping

CODES = {name[len("AIO_OP_"):]: getattr(_lib, name) for name in dir(_lib) if name.startswith("AIO_OP_")}
_ERROR = _ffi.sizeof("struct aio_error")


class Init(NamedTuple):
    """A spawned init: its pid, a pidfd on it, and the parent's end of the sync socket."""

    pid: int
    pidfd: int
    sync: int


def spawn(
    plan: Plan,
    *,
    stdio: tuple[int, int, int] = (-1, -1, -1),
    state_dir_fd: int,
    preserve_fds: int = 0,
    wait_fifo: bool = True,
) -> Init:
    """clone3 the init into its namespaces; it waits for ``go()`` before doing anything."""
    wire = encode(plan, CODES, last_cap())
    pair = _ffi.new("int[2]")
    err = _lib.aio_sync_pair(pair)
    if err < 0:
        raise OSError(-err, os.strerror(-err))
    parent, child = pair[0], pair[1]
    buf = _ffi.from_buffer(wire)
    args = _ffi.new("struct aio_spawn_args *")
    args.plan = _ffi.cast("const char *", buf)
    args.plan_len = len(wire)
    args.clone_flags = plan.clone_flags
    args.stdio = list(stdio)
    args.sync_fd = child
    args.state_dir_fd = state_dir_fd
    args.preserve_fds = preserve_fds
    args.wait_fifo = int(wait_fifo)
    pidfd = _ffi.new("int *")
    try:
        pid = _lib.aio_spawn(args, pidfd)
    finally:
        os.close(child)
    if pid < 0:
        os.close(parent)
        raise SpawnError("clone3", "", -pid, f"clone3: {_reason(-pid)}")
    return Init(pid, pidfd[0], parent)


def go(init: Init, plan: Plan) -> None:
    """Let the init past its WaitGoStep, handing it its cgroup.procs files opened here.

    The kernel checks a cgroup migration against the credentials of whoever opened
    cgroup.procs, so the init can join from inside a user namespace too; and the grace
    period the first migration waits for is spent in the init, not in the caller.
    """
    step = next(s for s in plan.steps if isinstance(s, WaitGoStep))
    fds: list[int] = []
    try:
        for path in step.cgroup_procs:
            try:
                fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
            except OSError as e:
                raise CgroupError(f"cannot open {path} to join the cgroup: {e.strerror}") from e
        err = _lib.aio_send_go(init.sync, fds, len(fds))
        if err < 0:
            read_report(init)  # the init failed before its WaitGoStep: raise what it said
            raise OSError(-err, f"sending the go to the init: {os.strerror(-err)}")
    finally:
        for fd in fds:
            os.close(fd)


def write_id_maps(
    init: Init, uid_mappings: Iterable[IDMapping], gid_mappings: Iterable[IDMapping], *, deny_setgroups: bool = False
) -> None:
    """Write the user namespace's maps while the init waits (WaitMapsStep), then release it.

    An unprivileged writer may map only itself, and a gid map only once setgroups is denied.
    """
    if deny_setgroups:
        with open(f"/proc/{init.pid}/setgroups", "w") as f:
            f.write("deny")
    for name, mappings in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
        text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)
        try:
            with open(f"/proc/{init.pid}/{name}", "w") as f:
                f.write(text)
        except OSError as e:
            raise SpawnError("id maps", name, e.errno or 0, f"writing {name} ({text.strip()!r}): {e.strerror}") from e
    try:
        os.write(init.sync, b"M")
    except BrokenPipeError:
        read_report(init)
        raise


def read_report(init: Init) -> None:
    """Read the init's report: returns once it is ready, raises SpawnError if a step failed."""
    msg = os.read(init.sync, _ERROR)
    if msg == b"R":
        return
    if not msg:
        raise SpawnError("init", "", 0, "container init exited before it was ready")
    err = _ffi.new("struct aio_error *")
    _ffi.memmove(err, msg, min(len(msg), _ERROR))
    step = _ffi.string(err.step).decode(errors="replace")
    path = _ffi.string(err.path).decode(errors="replace")
    raise SpawnError(step, path, err.err, error_message(step, path, err.err))


def _reason(errno: int) -> str:
    """The errno's text the way Go (so runc) prints it: lower case."""
    text = os.strerror(errno)
    return text[:1].lower() + text[1:]


def error_message(step: str, path: str, errno: int) -> str:
    """runc's wording where container managers parse it (exec errors), a uniform one elsewhere."""
    if step == "exec-lookup":
        return f'exec: "{path}": executable file not found in $PATH'
    if step == "exec":
        return f'exec: "{path}": {_reason(errno)}'
    where = f' "{path}"' if path else ""
    return f"{step}{where}: {_reason(errno)}"
