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
    if isinstance(e, OSError) and not isinstance(e, AioRuntimeError):
        return f"{e.filename}: {e.strerror}" if e.filename else str(e)
    return str(e)


class Log:
    """runc's error reporting: ``--log FILE`` in text or json lines, else stderr."""

    def __init__(self, path: str | None, fmt: str) -> None:
        self.path, self.fmt = path, fmt

    def error(self, msg: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            line = json.dumps({"level": "error", "msg": msg, "time": stamp}, separators=(",", ":"))
        else:
            line = f"time={json.dumps(stamp)} level=error msg={json.dumps(msg)}"
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")
            print(msg, file=sys.stderr)
        else:
            print(line, file=sys.stderr)


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
        console_socket=console,
    )
    state = creation.run()
    if isinstance(f["pid_file"], str):
        try:
            _write_pid_file(f["pid_file"], state.pid)
        except OSError:
            from ..ops import lifecycle

            lifecycle.delete(store, cid, force=True)
            raise
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

    cid = _str(p.args, "id")
    creation = _create(p, store, detach=bool(p.flags["detach"]))
    try:
        lifecycle.start(store, cid)
    except BaseException:
        lifecycle.delete(store, cid, force=True)
        raise
    if p.flags["detach"]:
        return 0
    from .foreground import wait

    assert creation.console is not None
    code = wait(creation.pidfd, creation.console.master)
    if not p.flags["keep"]:
        lifecycle.delete(store, cid, force=True)
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
    started = Execution(store, cid, process, preserve_fds=_preserve_fds(f), console_socket=console).run()
    pid_file = _opt(f, "pid_file")
    if pid_file is not None:
        try:
            _write_pid_file(pid_file, started.pid)
        except OSError:
            _terminate(started.pidfd)
            raise
    if detach:
        return 0
    from .foreground import wait

    return wait(started.pidfd, started.terminal)


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
    from ..ops import lifecycle

    try:
        lifecycle.delete(store, _str(p.args, "id"), force=bool(p.flags["force"]))
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


def cmd_spec(p: Parsed, store: Store) -> int:
    from ..spec import default_spec, rootless_spec

    path = os.path.join(_str(p.flags, "bundle"), "config.json")
    if os.path.exists(path):
        raise AioRuntimeError("File config.json exists. Remove it first.")
    with open(path, "w") as f:
        json.dump(rootless_spec() if p.flags["rootless"] else default_spec(), f, indent="\t")
    return 0


HELP = Flag(("help", "h"), None, "show help")
GLOBAL_FLAGS = (
    Flag(("root",), "DIR", "root directory for container state", DEFAULT_ROOT),
    Flag(("log",), "FILE", "write errors to this file"),
    Flag(("log-format",), "text|json", "format of --log lines", "text"),
    Flag(("debug",), None, "accepted for runc compatibility", False),
    Flag(("systemd-cgroup",), None, "accepted; cgroupfs paths are used", False),
    Flag(("rootless",), "auto", "accepted for runc compatibility", "auto"),
    Flag(("criu",), "PATH", "path to criu (checkpoint/restore)", "criu"),
    Flag(("version", "v"), None, "print the version", False),
    HELP,
)
_ID = ("id",)
_CONSOLE_SOCKET = Flag(("console-socket",), "PATH", "unix socket that receives the pty master (SCM_RIGHTS)")
_CREATE_FLAGS = (
    Flag(("bundle", "b"), "DIR", "path to the bundle directory", "."),
    Flag(("pid-file",), "FILE", "write the init's pid to this file"),
    _CONSOLE_SOCKET,
    Flag(("no-pivot",), None, "move+chroot instead of pivot_root (ramfs roots)", False),
    Flag(("no-new-keyring",), None, "accepted; no session keyring is made", False),
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
        "run a process in a running container",
        (
            _CONSOLE_SOCKET,
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
    "spec": Command(
        "write a default config.json",
        (
            Flag(("bundle", "b"), "DIR", "where to write config.json", "."),
            Flag(("rootless",), None, "a config for an unprivileged user", False),
            HELP,
        ),
        (),
    ),
}
HANDLERS: dict[str, Handler] = {
    "create": cmd_create,
    "start": cmd_start,
    "run": cmd_run,
    "exec": cmd_exec,
    "ps": cmd_ps,
    "state": cmd_state,
    "kill": cmd_kill,
    "delete": cmd_delete,
    "list": cmd_list,
    "spec": cmd_spec,
}


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
    log = Log(g["log"] if isinstance(g["log"], str) else None, str(g["log_format"]))
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
