"""``aioruntime``: a runc-compatible command line over the synchronous core.

Container managers call the runtime 3-4 times per container, so this module imports only
what each subcommand needs, and never asyncio: waits are a plain ``poll``/``waitid``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import AioRuntimeError, ContainerNotFoundError, SpawnError
from ..state import DEFAULT_ROOT, Store
from .args import Command, Flag, Parsed, UsageError, Value, parse, strings, usage

if TYPE_CHECKING:
    from ..ops.create import Creation
    from .foreground import Forwarder

Handler = Callable[[Parsed, Store], int]


class CommandError(AioRuntimeError):
    """A command's failure, with runc's exit status for it (exec: 255)."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def _str(values: Mapping[str, Value], name: str) -> str:
    value = values[name]
    assert isinstance(value, str)
    return value


def _opt(values: Mapping[str, Value], name: str) -> str | None:
    """A value flag's value, None when not given (or given empty, which runc reads as unset)."""
    value = values[name]
    return value if isinstance(value, str) and value else None


def _message(e: Exception) -> str:
    if isinstance(e, OSError) and not isinstance(e, AioRuntimeError):  # without Python's "[Errno N]"
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror or str(e)
    return str(e)


class Log:
    """runc's error reporting: ``--log FILE`` in text or json lines, else stderr."""

    def __init__(self, path: str | None, fmt: str) -> None:
        self.path, self.fmt = path, fmt

    def error(self, msg: str) -> None:
        if self._line("error", msg):
            print(msg, file=sys.stderr)

    def warning(self, msg: str) -> None:
        """What went wrong without failing the command (a poststop hook, an ignored setting)."""
        self._line("warning", msg)

    def _line(self, level: str, msg: str) -> bool:
        """Write one line (logrus's shape) to the log file, or else stderr; whether to the file."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": stamp}, separators=(",", ":"))
        else:
            line = f"time={json.dumps(stamp)} level={level} msg={json.dumps(msg)}"
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")
            return True
        print(line, file=sys.stderr)
        return False

    def take_warnings(self) -> None:
        """The library's warnings (a kernel memory limit ignored, as runc does) as log lines."""
        import warnings

        warnings.showwarning = lambda message, *_, **__: self.warning(str(message))


LOG = Log(None, "text")  # main() sets the one the flags ask for


def _delete(store: Store, cid: str, *, force: bool = False) -> None:
    """Delete the container; a poststop hook that failed is a warning."""
    from ..ops import lifecycle

    for failed in lifecycle.delete(store, cid, force=force):
        LOG.warning(str(failed))


def _signal_number(text: str) -> int:
    import signal

    if text.isdigit():
        return int(text)
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise AioRuntimeError(f"unknown signal {text!r}") from None


def _write_pid_file(path: str, pid: int) -> None:
    """The decimal pid, no newline, written whole (tmp + rename) as runc does."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def _preserve_fds(f: Mapping[str, Value]) -> int:
    preserve = _str(f, "preserve_fds")
    if not preserve.isdigit():
        raise UsageError(f"--preserve-fds: expected a number, got {preserve!r}")
    return int(preserve)


def _check_terminal(terminal: bool, detach: bool, console_socket: str | None) -> None:
    """runc's rules: a detached terminal needs a console socket, and only it uses one."""
    if detach and terminal and console_socket is None:
        raise AioRuntimeError("cannot allocate tty if runc will detach without setting console socket")
    if (not detach or not terminal) and console_socket is not None:
        raise AioRuntimeError("cannot use console socket if runc will not detach or allocate tty")


class PidfdSocket:
    """runc 1.2's ``--pidfd-socket``: connected before anything starts (a bad path fails
    early), then one message carrying a pidfd of the process: "standard" for an init,
    "setns" for an exec, as runc's init sends it."""

    def __init__(self, path: str | None) -> None:
        from .. import spawn

        self.sock = -1 if path is None else spawn.connect_socket(path, "pidfd socket")

    def send(self, pidfd: int, kind: bytes) -> None:
        from .. import spawn

        if self.sock >= 0:
            spawn.send_fd(self.sock, pidfd, kind, "the pidfd to the pidfd socket")

    def close(self) -> None:
        if self.sock >= 0:
            os.close(self.sock)
            self.sock = -1


def _create(p: Parsed, store: Store, *, detach: bool) -> Creation:
    """create a container from the bundle; the Creation holds a pidfd on its init (our child)
    and, in the foreground with a terminal, the pty master."""
    from ..ops.create import Creation
    from ..spec import load

    cid, f = _str(p.args, "id"), p.flags
    bundle, console = _str(f, "bundle"), _opt(f, "console_socket")
    spec = load(bundle)
    _check_terminal(spec.process is not None and spec.process.terminal, detach, console)
    creation = Creation(
        store, cid, bundle, no_pivot=bool(f["no_pivot"]), preserve_fds=_preserve_fds(f), spec=spec,
        console_socket=console, no_new_keyring=bool(f["no_new_keyring"]),
    )
    pidfd_socket = PidfdSocket(_opt(f, "pidfd_socket"))
    try:
        state = creation.run()
        try:
            if isinstance(f["pid_file"], str):
                _write_pid_file(f["pid_file"], state.pid)
            pidfd_socket.send(creation.pidfd, b"standard")
        except OSError:
            _delete(store, cid, force=True)
            raise
    finally:
        pidfd_socket.close()
    return creation


def cmd_create(p: Parsed, store: Store) -> int:
    _create(p, store, detach=True)
    return 0


def cmd_start(p: Parsed, store: Store) -> int:
    from ..ops import lifecycle

    lifecycle.start(store, _str(p.args, "id"))
    return 0


def cmd_run(p: Parsed, store: Store) -> int:
    from ..ops import lifecycle

    from .foreground import Forwarder

    cid = _str(p.args, "id")
    signals = None if p.flags["detach"] else Forwarder()
    creation = _create(p, store, detach=bool(p.flags["detach"]))
    try:
        lifecycle.start(store, cid)
    except BaseException:
        _delete(store, cid, force=True)
        raise
    if signals is None:
        return 0
    assert creation.console is not None
    keep = bool(p.flags["keep"])
    return _foreground(store, cid, creation.pidfd, creation.console.master, keep=keep, signals=signals)


def _foreground(
    store: Store, cid: str, pidfd: int, master: int = -1, *, keep: bool, signals: Forwarder | None = None
) -> int:
    """Wait for our child init (relaying its terminal, forwarding signals); delete it unless
    ``keep``; its status as runc exits with it."""
    from .foreground import Forwarder

    code = (signals or Forwarder()).wait(pidfd, master)
    if not keep:
        _delete(store, cid, force=True)
    return code


def cmd_exec(p: Parsed, store: Store) -> int:
    try:
        return _exec(p, store)
    except UsageError:
        raise
    except SpawnError as e:
        raise CommandError(f"exec failed: unable to start container process: {e}", 255) from e
    except (AioRuntimeError, OSError) as e:
        raise CommandError(f"exec failed: {_message(e)}", 255) from e


def _exec(p: Parsed, store: Store) -> int:
    """runc exec: the process from ``-p`` as is, or the container's with the flags applied."""
    from ..ops.exec import Execution, exec_process

    cid, f = _str(p.args, "id"), p.flags
    detach, console, process_file = bool(f["detach"]), _opt(f, "console_socket"), _opt(f, "process")
    if process_file is None and not p.rest:
        raise AioRuntimeError("process args cannot be empty")
    if process_file is not None:
        from ..spec import load_process

        process = load_process(process_file)
    else:
        try:
            gids = [int(g) for g in strings(f["additional_gids"])]
        except ValueError as e:
            raise UsageError(f"--additional-gids: {e}") from None
        if any(g < 0 for g in gids):
            raise AioRuntimeError(f"additional-gids must be a positive number {min(gids)}")
        no_new_privs = f["no_new_privs"]
        process = exec_process(
            store.load(cid).config, p.rest, env=strings(f["env"]), cwd=_opt(f, "cwd"), user=_opt(f, "user"),
            additional_gids=gids, capabilities=strings(f["cap"]),
            no_new_privileges=no_new_privs if isinstance(no_new_privs, bool) else None, terminal=bool(f["tty"]),
        )
    _check_terminal(process.terminal, detach, console)
    from .foreground import Forwarder

    signals = None if detach else Forwarder()
    pidfd_socket = PidfdSocket(_opt(f, "pidfd_socket"))
    try:
        started = Execution(store, cid, process, preserve_fds=_preserve_fds(f), console_socket=console).run()
        pid_file = _opt(f, "pid_file")
        try:
            if pid_file is not None:
                _write_pid_file(pid_file, started.pid)
            pidfd_socket.send(started.pidfd, b"setns")
        except OSError:
            _terminate(started.pidfd)
            raise
    finally:
        pidfd_socket.close()
    if signals is None:
        return 0
    return signals.wait(started.pidfd, started.terminal)


def _terminate(pidfd: int) -> None:
    """SIGKILL and reap our child (runc's terminate)."""
    import signal

    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitid(os.P_PIDFD, pidfd, os.WEXITED)


def cmd_ps(p: Parsed, store: Store) -> int:
    """runc ps: the container's host pids as JSON, or the lines of ``ps`` (default ``-ef``) for them."""
    from ..ops import lifecycle

    pids = lifecycle.processes(store, _str(p.args, "id"))
    if p.flags["format"] == "json":
        sys.stdout.write(json.dumps(pids or None, separators=(",", ":")) + "\n")  # Go: nil -> null
        return 0
    if p.flags["format"] != "table":
        raise AioRuntimeError("invalid format option")
    import subprocess

    ps = subprocess.run(["ps", *(p.rest or ("-ef",))], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    output = ps.stdout.decode(errors="replace")
    if ps.returncode != 0:
        raise AioRuntimeError(f"exit status {ps.returncode}: {output}")
    header, *lines = output.split("\n")
    if "PID" not in header.split():
        raise AioRuntimeError("couldn't find PID field in ps output")
    column, wanted = header.split().index("PID"), set(pids)
    sys.stdout.write(header + "\n")
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        try:
            pid = int(fields[column])
        except (ValueError, IndexError):
            raise AioRuntimeError(f"unable to parse pid: {line!r}") from None
        if pid in wanted:
            sys.stdout.write(line + "\n")
    return 0


def cmd_state(p: Parsed, store: Store) -> int:
    from ..ops import lifecycle

    sys.stdout.write(json.dumps(lifecycle.oci_state(store, store.load(_str(p.args, "id"))), indent=2))
    return 0


def cmd_kill(p: Parsed, store: Store) -> int:
    from ..ops import lifecycle

    sig = _signal_number(p.args["signal"] or "SIGTERM")
    lifecycle.kill(store, _str(p.args, "id"), sig, all_processes=bool(p.flags["all"]))
    return 0


def cmd_delete(p: Parsed, store: Store) -> int:
    try:
        _delete(store, _str(p.args, "id"), force=bool(p.flags["force"]))
    except ContainerNotFoundError:
        if p.flags["force"]:
            return 0
        raise
    return 0


def _owner(path: str) -> str:
    import pwd

    uid = os.stat(path).st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Go's tabwriter as runc sets it up (minwidth 12, padding 3); the last column unpadded."""
    widths = [max(12, max(len(r[i]) for r in rows) + 3) for i in range(len(rows[0]) - 1)]
    return "".join("".join(c.ljust(w) for c, w in zip(r, widths)) + r[-1] + "\n" for r in rows)


def cmd_list(p: Parsed, store: Store) -> int:
    from ..ops import lifecycle

    states = []
    for cid in store.ids():
        try:
            st = lifecycle.oci_state(store, store.load(cid))
        except ContainerNotFoundError:
            continue
        st["owner"] = _owner(store.dir(cid))
        states.append(st)
    if p.flags["quiet"]:
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif p.flags["format"] == "json":
        print(json.dumps(states or None, separators=(",", ":")))
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        rows += [[s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]] for s in states]
        sys.stdout.write(_table(rows))
    return 0


def cmd_features(p: Parsed, store: Store) -> int:
    """runc features: what the runtime implements, as the OCI features JSON (4-space indent, as runc)."""
    from ..features import features

    sys.stdout.write(json.dumps(features(), indent=4) + "\n")
    return 0


def cmd_spec(p: Parsed, store: Store) -> int:
    from ..spec import default_spec, rootless_spec

    path = os.path.join(_str(p.flags, "bundle"), "config.json")
    if os.path.exists(path):
        raise AioRuntimeError("File config.json exists. Remove it first.")
    with open(path, "w") as f:
        json.dump(rootless_spec() if p.flags["rootless"] else default_spec(), f, indent="\t")
    return 0


def _ram_bytes(flag: str, text: str) -> int:
    """runc's (go-units RAMInBytes) sizes: 1024-based, "64m", "1.5g", "100MiB"; -1 is unlimited."""
    import re

    if text == "-1":
        return -1
    m = re.fullmatch(r"(\d+(?:\.\d+)*) ?([kmgtp])?i?b?", text.lower())
    if m is None:
        raise UsageError(f"invalid value for {flag}: invalid size: '{text}'")
    return int(float(m.group(1)) * 1024 ** " kmgtp".index(m.group(2) or " "))


def _integer(flag: str, text: str, unsigned: bool) -> int:
    if text.isdigit() or (not unsigned and text[:1] == "-" and text[1:].isdigit()):
        return int(text)
    parser = "ParseUint" if unsigned else "ParseInt"
    raise UsageError(f'invalid value for {flag}: strconv.{parser}: parsing "{text}": invalid syntax')


def _update_document(f: Mapping[str, Value]) -> dict[str, Any]:
    """``runc update``'s single-value flags as a resources document (unset flags left out)."""
    doc: dict[str, dict[str, Any]] = {"memory": {}, "cpu": {}, "blockIO": {}, "pids": {}}
    for flag, section, key, convert in (
        ("memory", "memory", "limit", _ram_bytes),
        ("memory_swap", "memory", "swap", _ram_bytes),
        ("memory_reservation", "memory", "reservation", _ram_bytes),
        ("kernel_memory", "memory", "kernel", _ram_bytes),
        ("kernel_memory_tcp", "memory", "kernelTCP", _ram_bytes),
        ("cpu_share", "cpu", "shares", lambda n, t: _integer(n, t, True)),
        ("cpu_period", "cpu", "period", lambda n, t: _integer(n, t, True)),
        ("cpu_quota", "cpu", "quota", lambda n, t: _integer(n, t, False)),
        ("cpu_rt_period", "cpu", "realtimePeriod", lambda n, t: _integer(n, t, True)),
        ("cpu_rt_runtime", "cpu", "realtimeRuntime", lambda n, t: _integer(n, t, False)),
        ("blkio_weight", "blockIO", "weight", lambda n, t: _integer(n, t, True)),
        ("pids_limit", "pids", "limit", lambda n, t: _integer(n, t, False)),
    ):
        value = f[flag]
        if isinstance(value, str) and value:
            doc[section][key] = convert(flag.replace("_", "-"), value)
    for flag, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if isinstance(f[flag], str):
            doc["cpu"][key] = f[flag]
    return {k: v for k, v in doc.items() if v}


def cmd_update(p: Parsed, store: Store) -> int:
    from ..ops import update as updating
    from ..spec.resources import parse_resources

    source = p.flags["resources"]
    if isinstance(source, str):  # as runc: then the other flags are ignored
        try:
            with (os.fdopen(os.dup(0)) if source == "-" else open(source)) as f:
                doc = json.load(f)
        except json.JSONDecodeError as e:
            raise AioRuntimeError(f"{source}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        change = parse_resources(doc)
    else:
        change = parse_resources(_update_document(p.flags))
    updating.update(store, _str(p.args, "id"), change)
    return 0


def _freeze_command(p: Parsed, store: Store) -> int:
    """pause and resume, with runc's words when the status does not allow them."""
    from ..errors import InvalidStateError
    from ..ops import freeze

    pause = p.command == "pause"
    try:
        (freeze.pause if pause else freeze.resume)(store, _str(p.args, "id"))
    except InvalidStateError:
        raise AioRuntimeError("container not running" if pause else "container not paused") from None
    return 0


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    """A Go duration ("5s", "1m30s", "500ms") in seconds, as runc's --interval takes it."""
    import re

    parts = re.findall(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", text.lstrip("+-"))
    if text == "0":
        return 0.0
    if not parts or "".join(n + u for n, u in parts) != text.lstrip("+-"):
        raise UsageError(f'invalid value "{text}" for flag -interval: parse error')
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return -seconds if text.startswith("-") else seconds


def cmd_events(p: Parsed, store: Store) -> int:
    """runc's events: NDJSON stats every --interval and OOM events as they come, until the
    container is deleted; --stats prints one stats event. A plain poll over the OOM and
    state-directory descriptors, with the next stats tick as its timeout."""
    import select

    from ..cgroups.notify import IN_DELETE_SELF, Inotify, OomWatch
    from ..cgroups.placement import locate
    from ..cgroups.stats import StatsReader
    from ..ops import lifecycle
    from ..stats import to_runc
    from ..status import Status

    cid = _str(p.args, "id")
    interval = _duration(_str(p.flags, "interval"))
    if interval <= 0:
        raise AioRuntimeError("duration interval must be greater than 0")
    state = store.load(cid)
    if lifecycle.status_of(store, state) is Status.STOPPED:
        raise AioRuntimeError(f"container with id {cid} is not running")
    cg = locate(state.cgroup_paths)

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    with StatsReader(cg, state.pid) as reader:
        if p.flags["stats"]:
            emit({"type": "stats", "id": cid, "data": to_runc(reader.read())})
            return 0
        directory = Inotify()
        oom = OomWatch(cg) if cg.has("memory") else None
        try:
            directory.watch(store.dir(cid), IN_DELETE_SELF)
            poller = select.poll()
            poller.register(directory.fd, select.POLLIN)
            if oom is not None:
                poller.register(oom.fd, select.POLLIN)
            due = time.monotonic() + interval
            while True:
                for fd, _ in poller.poll(max(due - time.monotonic(), 0) * 1000):
                    if oom is not None and fd == oom.fd:
                        for _ in range(oom.read()):
                            emit({"type": "oom", "id": cid})
                        if oom.gone:
                            poller.unregister(oom.fd)
                    elif directory.read():
                        return 0  # the container was deleted
                if time.monotonic() >= due:
                    due = max(due + interval, time.monotonic())
                    try:
                        emit({"type": "stats", "id": cid, "data": to_runc(reader.read())})
                    except OSError:
                        pass  # the cgroup was removed: the state directory's deletion follows
        finally:
            directory.close()
            if oom is not None:
                oom.close()


def _path(values: Mapping[str, Value], name: str) -> str | None:
    value = values[name]
    return os.path.abspath(value) if isinstance(value, str) and value else None


def _criu(p: Parsed) -> str | None:
    value = p.globals["criu"]
    return value if isinstance(value, str) else None


def cmd_checkpoint(p: Parsed, store: Store) -> int:
    from ..waits import blocking
    from ..ops.checkpoint import CheckpointOptions, checkpoint

    cid, f = _str(p.args, "id"), p.flags
    image_path = _path(f, "image_path")
    if image_path is None:
        raise UsageError("checkpoint: --image-path must not be empty")
    options = CheckpointOptions(
        image_path,
        _path(f, "work_path"),
        leave_running=bool(f["leave_running"]),
        tcp_established=bool(f["tcp_established"]),
        ext_unix_sk=bool(f["ext_unix_sk"]),
        shell_job=bool(f["shell_job"]),
        file_locks=bool(f["file_locks"]),
        pre_dump=bool(f["pre_dump"]),
        parent_path=f["parent_path"] if isinstance(f["parent_path"], str) else None,
        manage_cgroups_mode=f["manage_cgroups_mode"] if isinstance(f["manage_cgroups_mode"], str) else None,
    )
    if blocking(checkpoint(store, cid, options, criu=_criu(p))):
        _delete(store, cid, force=True)  # as runc: the images are what is left
    return 0


def cmd_restore(p: Parsed, store: Store) -> int:
    """Restore with our stdio as the init's; the init is our child (CRIU's rst_sibling), so
    without -d we wait for it like ``run``, and with -d our caller's subreaper gets it."""
    from ..waits import blocking
    from ..ops.restore import RestoreOptions, restore

    cid, f = _str(p.args, "id"), p.flags
    image_path = _path(f, "image_path")
    if image_path is None:
        raise UsageError("restore: --image-path must not be empty")
    options = RestoreOptions(
        image_path,
        _path(f, "work_path"),
        tcp_established=bool(f["tcp_established"]),
        ext_unix_sk=bool(f["ext_unix_sk"]),
        shell_job=bool(f["shell_job"]),
        file_locks=bool(f["file_locks"]),
        manage_cgroups_mode=f["manage_cgroups_mode"] if isinstance(f["manage_cgroups_mode"], str) else None,
    )
    restored = blocking(restore(store, cid, _str(f, "bundle"), options, criu=_criu(p)))
    if isinstance(f["pid_file"], str):
        try:
            _write_pid_file(f["pid_file"], restored.state.pid)
        except OSError:
            _delete(store, cid, force=True)
            raise
    if f["detach"]:
        return 0
    return _foreground(store, cid, restored.pidfd, keep=False)


HELP = Flag(("help", "h"), None, "show help")
GLOBAL_FLAGS = (
    Flag(("root",), "DIR", "root directory for container state", DEFAULT_ROOT),
    Flag(("log",), "FILE", "write errors to this file"),
    Flag(("log-format",), "text|json", "format of --log lines", "text"),
    Flag(("debug",), None, "accepted for runc compatibility", False),
    Flag(("systemd-cgroup",), None, "accepted; cgroupfs paths are used", False),
    Flag(("rootless",), "auto", "accepted for runc compatibility", "auto"),
    Flag(("criu",), "PATH", "path to criu (checkpoint/restore; default $AIORUNTIME_CRIU, else tools/install-criu.sh's, else criu on PATH)"),
    Flag(("version", "v"), None, "print the version", False),
    HELP,
)
_ID = ("id",)
_CONSOLE_SOCKET = Flag(("console-socket",), "PATH", "unix socket that receives the pty master (SCM_RIGHTS)")
_PIDFD_SOCKET = Flag(("pidfd-socket",), "PATH", "unix socket that receives a pidfd of the process (SCM_RIGHTS)")
_CREATE_FLAGS = (
    Flag(("bundle", "b"), "DIR", "path to the bundle directory", "."),
    Flag(("pid-file",), "FILE", "write the init's pid to this file"),
    _CONSOLE_SOCKET,
    _PIDFD_SOCKET,
    Flag(("no-pivot",), None, "move+chroot instead of pivot_root (ramfs roots)", False),
    Flag(("no-new-keyring",), None, "keep the caller's session keyring instead of a new one", False),
    Flag(("preserve-fds",), "N", "pass N fds beyond stdio to the process", "0"),
    HELP,
)
COMMANDS: dict[str, Command] = {
    "create": Command("create a container, blocked before the user's process", _CREATE_FLAGS, _ID),
    "start": Command("run the user's process in a created container", (HELP,), _ID),
    "run": Command(
        "create and start a container; wait for it unless -d",
        _CREATE_FLAGS
        + (
            Flag(("detach", "d"), None, "leave the container running and return", False),
            Flag(("keep",), None, "do not delete the container after it exits", False),
        ),
        _ID,
    ),
    "exec": Command(
        "run a process in a created or running container",
        (
            _CONSOLE_SOCKET,
            _PIDFD_SOCKET,
            Flag(("cwd",), "DIR", "working directory in the container"),
            Flag(("env", "e"), "NAME=VALUE", "set an environment variable (repeatable)", many=True),
            Flag(("tty", "t"), None, "allocate a pseudo-terminal", False),
            Flag(("user", "u"), "UID[:GID]", "user (and group) ids to run as"),
            Flag(("additional-gids", "g"), "GID", "an additional group id (repeatable)", many=True),
            Flag(("process", "p"), "FILE", "an OCI process.json to run, instead of COMMAND and the flags"),
            Flag(("detach", "d"), None, "leave the process running and return", False),
            Flag(("pid-file",), "FILE", "write the process's pid to this file"),
            Flag(("no-new-privs",), None, "set no_new_privs for the process"),
            Flag(("cap", "c"), "CAP", "add a capability (repeatable)", many=True),
            Flag(("preserve-fds",), "N", "pass N fds beyond stdio to the process", "0"),
            HELP,
        ),
        ("id", "command..."),
    ),
    "ps": Command(
        "list the processes of a container (runs ps, default -ef; or their host pids as json)",
        (Flag(("format", "f"), "table|json", "output format", "table"), HELP),
        ("id", "ps-options..."),
    ),
    "state": Command("print the OCI state of a container", (HELP,), _ID),
    "kill": Command(
        "send a signal (default SIGTERM) to the init",
        (Flag(("all", "a"), None, "signal every process in the container", False), HELP),
        ("id", "signal?"),
    ),
    "delete": Command(
        "delete a created or stopped container (-f: any)",
        (Flag(("force", "f"), None, "kill and delete a running container", False), HELP),
        _ID,
    ),
    "list": Command(
        "list containers",
        (
            Flag(("quiet", "q"), None, "print only the ids", False),
            Flag(("format", "f"), "table|json", "output format", "table"),
            HELP,
        ),
        (),
    ),
    "features": Command("print the features this runtime implements (OCI features JSON)", (HELP,), ()),
    "spec": Command(
        "write a default config.json",
        (
            Flag(("bundle", "b"), "DIR", "where to write config.json", "."),
            Flag(("rootless",), None, "a config for an unprivileged user", False),
            HELP,
        ),
        (),
    ),
    "update": Command(
        "change the resource limits of a container",
        (
            Flag(("resources", "r"), "FILE", "a linux.resources JSON document ('-': stdin); other flags are then ignored"),
            Flag(("memory",), "BYTES", "memory limit (64m, 1g, -1 for none)"),
            Flag(("memory-swap",), "BYTES", "memory+swap limit; -1 for unlimited swap"),
            Flag(("memory-reservation",), "BYTES", "memory soft limit"),
            Flag(("kernel-memory",), "BYTES", "kernel memory limit: ignored with a warning, as by runc 1.1"),
            Flag(("kernel-memory-tcp",), "BYTES", "kernel TCP buffer memory limit (cgroup v1; ignored with a warning elsewhere)"),
            Flag(("cpu-share", "cpu-shares"), "N", "CPU shares (relative weight)"),
            Flag(("cpu-period",), "USECS", "CFS period"),
            Flag(("cpu-quota",), "USECS", "CFS quota per period; -1 for none"),
            Flag(("cpu-rt-period",), "USECS", "realtime period"),
            Flag(("cpu-rt-runtime",), "USECS", "realtime runtime per period"),
            Flag(("cpuset-cpus",), "LIST", "CPUs to run on (0-3,6)"),
            Flag(("cpuset-mems",), "LIST", "memory nodes to use"),
            Flag(("pids-limit",), "N", "maximum number of tasks; -1 for none"),
            Flag(("blkio-weight",), "N", "block IO weight, 10 to 1000"),
            HELP,
        ),
        _ID,
    ),
    "pause": Command("freeze every process of a container", (HELP,), _ID),
    "resume": Command("thaw the processes of a paused container", (HELP,), _ID),
    "events": Command(
        "print OOM events and statistics (NDJSON) until the container is deleted",
        (
            Flag(("interval",), "DURATION", "statistics interval (Go syntax: 5s, 500ms)", "5s"),
            Flag(("stats",), None, "print the statistics once and exit", False),
            HELP,
        ),
        _ID,
    ),
}
_CRIU_FLAGS = (
    Flag(("image-path",), "DIR", "directory of CRIU's images", "checkpoint"),
    Flag(("work-path",), "DIR", "directory for CRIU's log and work files (default: the image path)"),
    Flag(("tcp-established",), None, "allow open TCP connections", False),
    Flag(("ext-unix-sk",), None, "allow external unix sockets", False),
    Flag(("shell-job",), None, "allow a shell job (a terminal from outside)", False),
    Flag(("file-locks",), None, "handle file locks", False),
    Flag(("manage-cgroups-mode",), "MODE", "cgroups mode of CRIU: soft, full, strict or ignore"),
)
COMMANDS["checkpoint"] = Command(
    "checkpoint a running container with CRIU (and delete it, unless --leave-running)",
    _CRIU_FLAGS
    + (
        Flag(("leave-running",), None, "leave the processes running after checkpointing", False),
        Flag(("pre-dump",), None, "dump memory only, to build a later checkpoint on", False),
        Flag(("parent-path",), "DIR", "a pre-dump's images, relative to --image-path"),
        HELP,
    ),
    _ID,
)
COMMANDS["restore"] = Command(
    "restore a container from a checkpoint; wait for it unless -d",
    _CRIU_FLAGS
    + (
        Flag(("bundle", "b"), "DIR", "path to the bundle directory", "."),
        Flag(("detach", "d"), None, "leave the container running and return", False),
        Flag(("pid-file",), "FILE", "write the init's pid to this file"),
        Flag(("no-subreaper",), None, "accepted; the restored init is this process's child anyway", False),
        Flag(("no-pivot",), None, "accepted; CRIU restores the root itself", False),
        HELP,
    ),
    _ID,
)
HANDLERS: dict[str, Handler] = {
    "checkpoint": cmd_checkpoint,
    "restore": cmd_restore,
    "create": cmd_create,
    "start": cmd_start,
    "run": cmd_run,
    "exec": cmd_exec,
    "ps": cmd_ps,
    "state": cmd_state,
    "kill": cmd_kill,
    "delete": cmd_delete,
    "list": cmd_list,
    "features": cmd_features,
    "spec": cmd_spec,
    "update": cmd_update,
    "pause": _freeze_command,
    "resume": _freeze_command,
    "events": cmd_events,
}


_APPLY_RESOURCES = frozenset({"create", "run", "update", "restore"})  # the commands that may warn


def _version() -> NoReturn:
    from .. import __version__
    from ..ops.lifecycle import OCI_VERSION

    sys.stdout.write(f"aioruntime version {__version__}\nspec: {OCI_VERSION}\n")
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    words = sys.argv[1:] if argv is None else list(argv)
    if not words:  # as runc: the help, successfully
        sys.stdout.write(usage("aioruntime", GLOBAL_FLAGS, COMMANDS))
        os._exit(0)
    try:
        parsed = parse(words, GLOBAL_FLAGS, COMMANDS)
    except UsageError as e:
        if "-h" in words or "--help" in words:
            cmd = next((w for w in words if w in COMMANDS), None)
            sys.stdout.write(usage("aioruntime", GLOBAL_FLAGS, COMMANDS, cmd))
            os._exit(0)
        if ("-v" in words or "--version" in words) and not e.args[0].startswith("flag"):
            _version()
        sys.stderr.write(f"aioruntime: {e}\n(see aioruntime --help)\n")
        os._exit(3 if e.args[0].startswith("no such command") else 1)  # runc's codes
    if parsed.globals["help"] or parsed.flags.get("help"):
        sys.stdout.write(usage("aioruntime", GLOBAL_FLAGS, COMMANDS, None if parsed.globals["help"] else parsed.command))
        os._exit(0)
    if parsed.globals["version"]:
        _version()
    if parsed.globals["log_format"] not in ("text", "json"):
        sys.stderr.write(f"aioruntime: invalid log-format: {parsed.globals['log_format']}\n")
        os._exit(1)
    g = parsed.globals
    global LOG
    log = LOG = Log(g["log"] if isinstance(g["log"], str) else None, str(g["log_format"]))
    if parsed.command in _APPLY_RESOURCES:
        log.take_warnings()
    try:
        code = HANDLERS[parsed.command](parsed, Store(str(g["root"])))
    except CommandError as e:
        log.error(str(e))
        code = e.exit_code
    except (AioRuntimeError, UsageError, OSError) as e:
        log.error(_message(e))
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    # skip the interpreter's teardown (module and object finalisation): a few ms per call
    # that a container manager pays 3-4 times per container
    os._exit(code)
