"""Start a container init through the compiled ``aio_spawn`` and read what it reports."""

from __future__ import annotations

import os
from typing import NamedTuple

from ._native import ffi as _ffi
from ._native import lib as _lib
from .errors import SpawnError
from .plan import Plan, encode, last_cap

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


def go(init: Init) -> None:
    """Tell the init its cgroups are joined and it may set the container up."""
    os.write(init.sync, b"G")


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
