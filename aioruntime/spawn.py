"""Start a container init, or a process joining a running container, through the compiled
``aio_spawn``/``aio_exec``, and read what it reports."""


import os
import signal
from collections.abc import Iterable
from typing import Any, NamedTuple

from ._native import ffi as _ffi
from ._native import lib as _lib
from .errors import CgroupError, HookError, SpawnError
from .namespaces import is_ours
from .plan import Plan, WaitGoStep, encode, last_cap
from .spec import IDMapping

CODES = {name[len("AIO_OP_"):]: getattr(_lib, name) for name in dir(_lib) if name.startswith("AIO_OP_")}
_ERROR = max(_ffi.sizeof("struct aio_error"), _ffi.sizeof("struct aio_hook_error"))


class Init(NamedTuple):
    """A spawned process: its pid, a pidfd on it, and the parent's end of the sync socket."""

    pid: int
    pidfd: int
    sync: int


def _sync_pair() -> tuple[int, int]:
    pair = _ffi.new("int[2]")
    err = _lib.aio_sync_pair(pair)
    if err < 0:
        raise OSError(-err, os.strerror(-err))
    return pair[0], pair[1]


def _args(
    plan: Plan, wire: Any, stdio: tuple[int, int, int], sync: int, state_dir_fd: int, preserve_fds: int, wait_fifo: bool
) -> Any:
    """The C arguments; ``wire`` (a cffi buffer) must outlive their use."""
    args = _ffi.new("struct aio_spawn_args *")
    args.plan = _ffi.cast("const char *", wire)
    args.plan_len = len(wire)
    args.clone_flags = plan.clone_flags
    args.stdio = list(stdio)
    args.sync_fd = sync
    args.state_dir_fd = state_dir_fd
    args.preserve_fds = preserve_fds
    args.wait_fifo = int(wait_fifo)
    args.cgroup2_fd = -1
    return args


def _wire(plan: Plan) -> Any:
    return _ffi.from_buffer(encode(plan, CODES, last_cap()))


def spawn(
    plan: Plan,
    *,
    stdio: tuple[int, int, int] = (-1, -1, -1),
    state_dir_fd: int,
    preserve_fds: int = 0,
    wait_fifo: bool = True,
    cgroup2: str = "",
) -> Init:
    """clone3 the init into its namespaces, and straight into the ``cgroup2`` directory if
    given; it waits for ``go()`` before joining its v1 cgroups. With a ``join`` (namespaces
    by path, time offsets) an intermediate joins them first (``_start``)."""
    if plan.join is not None:
        return _start(plan, stdio=stdio, state_dir_fd=state_dir_fd, preserve_fds=preserve_fds,
                      wait_fifo=wait_fifo, cgroup2=cgroup2)
    wire = _wire(plan)
    parent, child = _sync_pair()
    args = _args(plan, wire, stdio, child, state_dir_fd, preserve_fds, wait_fifo)
    pidfd = _ffi.new("int *")
    try:
        if cgroup2:
            args.cgroup2_fd = os.open(cgroup2, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        pid = _lib.aio_spawn(args, pidfd)
    finally:
        os.close(child)
        if args.cgroup2_fd >= 0:
            os.close(args.cgroup2_fd)
    if pid < 0:
        os.close(parent)
        raise SpawnError("clone3", "", -pid, f"clone3: {_reason(-pid)}")
    return Init(pid, pidfd[0], parent)


def exec_(plan: Plan, *, stdio: tuple[int, int, int] = (-1, -1, -1), preserve_fds: int = 0) -> Init:
    """Start ``plan``'s process in the running container its ``join`` names, as our child.

    Returns once the process has set itself up and exec'd, or failed (well under a
    millisecond where it shares our memory until then, see _clone.c); its report is on
    ``sync`` (``read_report``) by then, or soon after on architectures where it is a fork.
    """
    return _start(plan, stdio=stdio, state_dir_fd=-1, preserve_fds=preserve_fds, wait_fifo=False)


def _start(
    plan: Plan, *, stdio: tuple[int, int, int], state_dir_fd: int, preserve_fds: int, wait_fifo: bool, cgroup2: str = ""
) -> Init:
    """The process of ``plan``, started through the compiled intermediate (aio_exec) that
    enters ``plan.join``; a namespace we are in already is left out (setns into our own user
    namespace is an error, into any other a no-op)."""
    join = plan.join
    assert join is not None, "a plan with a join"
    wire = _wire(plan)
    opened: list[int] = []

    def open_(path: str, flags: int) -> int:
        if not path:
            return -1
        fd = os.open(path, flags | os.O_CLOEXEC)
        opened.append(fd)
        return fd

    try:
        namespaces = [(open_(path, os.O_RDONLY), flag) for path, flag in join.namespaces]
        namespaces = [(fd, flag) for fd, flag in namespaces if not is_ours(fd, flag)]
        j = _ffi.new("struct aio_join *")
        ns_fds = _ffi.new("int[]", [fd for fd, _ in namespaces])
        ns_types = _ffi.new("int[]", [flag for _, flag in namespaces])
        tasks_fds = _ffi.new("int[]", [open_(path, os.O_WRONLY) for path in join.tasks])
        paths = [_ffi.new("char[]", p.encode()) for p in join.tasks]
        tasks_paths = _ffi.new("char *[]", paths)
        offsets = _ffi.new("char[]", join.time_offsets.encode()) if join.time_offsets else _ffi.NULL
        j.ns_fds, j.ns_types, j.n_ns = ns_fds, ns_types, len(namespaces)
        j.cgroupns_fd = open_(join.cgroupns, os.O_RDONLY)
        j.root_fd = open_(join.root, os.O_PATH | os.O_DIRECTORY)
        j.cgroup2_fd = open_(join.cgroup2 or cgroup2, os.O_RDONLY | os.O_DIRECTORY)
        j.tasks_fds, j.tasks_paths, j.n_tasks = tasks_fds, tasks_paths, len(join.tasks)
        j.init, j.time_offsets = int(join.init), offsets
        parent, child = _sync_pair()
        opened += (parent, child)
        args = _args(plan, wire, stdio, child, state_dir_fd, preserve_fds, wait_fifo)
        pidfd = _ffi.new("int *")
        err = _ffi.new("struct aio_error *")
        pid = _lib.aio_exec(args, j, pidfd, err)
        if pid < 0:
            raise _error(err)
        opened.remove(parent)
        return Init(pid, pidfd[0], parent)
    finally:
        for fd in opened:
            os.close(fd)


def go(init: Init, plan: Plan) -> None:
    """Let the init past its WaitGoStep, handing it its v1 ``tasks`` files opened here (and
    the cgroup namespace it joins by path).

    The kernel checks a cgroup migration against the credentials of whoever opened the
    file, so the init can join from inside a user namespace too (see plan.WaitGoStep).
    """
    step = next(s for s in plan.steps if isinstance(s, WaitGoStep))
    fds: list[int] = []
    try:
        for path in step.join:
            try:
                fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
            except OSError as e:
                raise CgroupError(f"cannot open {path} to join the cgroup: {e.strerror}") from e
        if step.cgroupns:  # checked by plan.build; last, where the init looks for it
            fds.append(os.open(step.cgroupns, os.O_RDONLY | os.O_CLOEXEC))
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


def read_report(init: Init) -> int:
    """Read the report of the process: returns once it is ready (with the pty master it
    sent, or -1), raises SpawnError if a step failed (HookError: a createContainer hook)."""
    return _read(init, b"R")


def read_hooks_point(init: Init) -> None:
    """Wait for the init at its hooks point (plan.HooksPointStep); raise what it reports if
    it failed before."""
    fd = _read(init, b"H")
    assert fd < 0


def resume(init: Init) -> None:
    """Let the init go on past its hooks point: the prestart and createRuntime hooks succeeded."""
    try:
        os.write(init.sync, b"C")
    except BrokenPipeError:
        read_report(init)
        raise


def _read(init: Init, expect: bytes) -> int:
    buf = _ffi.new("char[]", _ERROR)
    fd = _ffi.new("int *")
    n = _lib.aio_recv(init.sync, buf, _ERROR, fd)
    if n < 0:
        raise OSError(-n, os.strerror(-n))
    if n == 1 and buf[0] == expect:
        return int(fd[0])
    if fd[0] >= 0:
        os.close(fd[0])
    if n == 0:
        raise SpawnError("init", "", 0, "container process exited before it was ready")
    raise failure(_ffi.buffer(buf, n)[:])


def failure(report: bytes) -> SpawnError | HookError:
    """The error a failure report of the init holds (struct aio_error or aio_hook_error)."""
    buf = _ffi.new("char[]", max(len(report), _ERROR))
    _ffi.memmove(buf, report, len(report))
    if _ffi.cast("struct aio_hook_error *", buf).kind == ord("H"):
        h = _ffi.cast("struct aio_hook_error *", buf)
        kind, path = _ffi.string(h.hook).decode(errors="replace"), _ffi.string(h.path).decode(errors="replace")
        said = _ffi.string(h.output).decode(errors="replace")
        return HookError(kind, path, 0, said, timeout=h.status) if h.timed_out else HookError(kind, path, h.status, said)
    return _error(_ffi.cast("struct aio_error *", buf))


def _error(err: Any) -> SpawnError:
    step = _ffi.string(err.step).decode(errors="replace")
    path = _ffi.string(err.path).decode(errors="replace")
    return SpawnError(step, path, err.err, error_message(step, path, err.err))


def kill(init: Init) -> None:
    """SIGKILL and reap a spawned process that is not to run after all; close its fds."""
    try:
        signal.pidfd_send_signal(init.pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitid(os.P_PIDFD, init.pidfd, os.WEXITED)
    os.close(init.pidfd)
    os.close(init.sync)


def connect_socket(path: str, what: str = "console socket") -> int:
    """A connection to a unix socket a container manager listens on (``--console-socket``,
    ``--pidfd-socket``)."""
    fd = int(_lib.aio_unix_connect(path.encode()))
    if fd < 0:  # in runc's words (Go's net.Dial), which managers show
        raise OSError(-fd, f"{what}: dial unix {path}: connect: {os.strerror(-fd).lower()}")
    return fd


def send_fd(sock: int, fd: int, name: bytes = b"/dev/ptmx", what: str = "the terminal to the console socket") -> None:
    """Hand ``fd`` over the socket, as runc does: one message holding ``name``, the fd attached
    (the pty master as "/dev/ptmx"; a pidfd as "standard" for an init, "setns" for an exec)."""
    err = _lib.aio_send_fd(sock, fd, name)
    if err < 0:
        raise OSError(-err, f"sending {what}: {os.strerror(-err)}")


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
