"""``aioruntime``: a runc-compatible command line over the synchronous core.

Container managers call the runtime 3-4 times per container, so this module imports only
what each subcommand needs, and never asyncio: waits are a plain ``poll``/``waitid``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..errors import AioRuntimeError, ContainerNotFoundError
from ..state import DEFAULT_ROOT, Store

Handler = Callable[[argparse.Namespace, Store], int]


class Log:
    """runc's error reporting: ``--log FILE`` in text or json lines, else stderr."""

    def __init__(self, path: str | None, fmt: str) -> None:
        self.path, self.fmt = path, fmt

    def error(self, msg: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            line = json.dumps({"level": "error", "msg": msg, "time": stamp})
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


def _create(args: argparse.Namespace, store: Store) -> tuple[int, int]:
    """create a container from the bundle; returns (pid, pidfd of the init)."""
    from ..ops.create import Creation

    creation = Creation(store, args.id, args.bundle, no_pivot=args.no_pivot, preserve_fds=args.preserve_fds)
    state = creation.run()
    if args.pid_file:
        try:
            _write_pid_file(args.pid_file, state.pid)
        except OSError:
            from ..ops import lifecycle

            lifecycle.delete(store, args.id, force=True)
            raise
    return state.pid, creation.pidfd


def cmd_create(args: argparse.Namespace, store: Store) -> int:
    _create(args, store)
    return 0


def cmd_start(args: argparse.Namespace, store: Store) -> int:
    from ..ops import lifecycle

    lifecycle.start(store, args.id)
    return 0


def cmd_run(args: argparse.Namespace, store: Store) -> int:
    import signal

    from ..ops import lifecycle

    pid, pidfd = _create(args, store)
    try:
        lifecycle.start(store, args.id)
    except BaseException:
        lifecycle.delete(store, args.id, force=True)
        raise
    if args.detach:
        return 0

    def forward(signum: int, _frame: object) -> None:
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    assert info is not None
    if not args.keep:
        lifecycle.delete(store, args.id, force=True)
    return info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status


def cmd_state(args: argparse.Namespace, store: Store) -> int:
    from ..ops import lifecycle

    print(json.dumps(lifecycle.oci_state(store, store.load(args.id)), indent=2))
    return 0


def cmd_kill(args: argparse.Namespace, store: Store) -> int:
    from ..ops import lifecycle

    lifecycle.kill(store, args.id, _signal_number(args.signal), all_processes=args.all)
    return 0


def cmd_delete(args: argparse.Namespace, store: Store) -> int:
    from ..ops import lifecycle

    try:
        lifecycle.delete(store, args.id, force=args.force)
    except ContainerNotFoundError:
        if args.force:
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


def cmd_list(args: argparse.Namespace, store: Store) -> int:
    from ..ops import lifecycle

    states = []
    for cid in store.ids():
        try:
            st = lifecycle.oci_state(store, store.load(cid))
        except ContainerNotFoundError:
            continue
        st["owner"] = _owner(store.dir(cid))
        states.append(st)
    if args.quiet:
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif args.format == "json":
        print(json.dumps(states or None, separators=(",", ":")))
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        rows += [[s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]] for s in states]
        sys.stdout.write(_table(rows))
    return 0


def cmd_spec(args: argparse.Namespace, store: Store) -> int:
    from ..spec import default_spec, rootless_spec

    path = os.path.join(args.bundle or ".", "config.json")
    if os.path.exists(path):
        raise AioRuntimeError("File config.json exists. Remove it first.")
    with open(path, "w") as f:
        json.dump(rootless_spec() if args.rootless else default_spec(), f, indent="\t")
    return 0


def _flag(p: argparse.ArgumentParser, *names: str, **kw: Any) -> None:
    """Register a flag under runc's spellings: ``--name`` and Go's single-dash ``-name``."""
    longs = [n for n in names if n.startswith("--")]
    p.add_argument(*names, *("-" + n[2:] for n in longs), **kw)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aioruntime", description="An OCI container runtime (runc-compatible).")
    _flag(p, "--root", default=DEFAULT_ROOT, help="root directory for container state")
    _flag(p, "--log", default=None, help="write errors to this file")
    _flag(p, "--log-format", default="text", choices=["text", "json"])
    _flag(p, "--debug", action="store_true")
    _flag(p, "--systemd-cgroup", action="store_true", help="accepted; cgroupfs paths are used")
    _flag(p, "--rootless", default="auto", help="accepted for runc compatibility")
    _flag(p, "--criu", default="criu", help="path to criu (checkpoint/restore)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.set_defaults(handler=handler)
        return c

    def creating(c: argparse.ArgumentParser) -> None:
        c.add_argument("id")
        _flag(c, "-b", "--bundle", default=".", help="path to the bundle directory")
        _flag(c, "--pid-file", default=None, help="write the init's pid to this file")
        _flag(c, "--no-pivot", action="store_true", help="move+chroot instead of pivot_root (ramfs roots)")
        _flag(c, "--no-new-keyring", action="store_true", help="accepted; no session keyring is made")
        _flag(c, "--preserve-fds", type=int, default=0, help="pass N fds beyond stdio to the process")

    creating(command("create", cmd_create, "create a container, blocked before the user's process"))
    command("start", cmd_start, "run the user's process in a created container").add_argument("id")
    run = command("run", cmd_run, "create and start a container; wait for it unless -d")
    creating(run)
    _flag(run, "-d", "--detach", action="store_true")
    _flag(run, "--keep", action="store_true", help="do not delete the container after it exits")
    command("state", cmd_state, "print the OCI state of a container").add_argument("id")
    kill = command("kill", cmd_kill, "send a signal (default SIGTERM) to the init")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="SIGTERM")
    _flag(kill, "-a", "--all", action="store_true", help="signal every process in the container")
    delete = command("delete", cmd_delete, "delete a created or stopped container (-f: any)")
    delete.add_argument("id")
    _flag(delete, "-f", "--force", action="store_true")
    ls = command("list", cmd_list, "list containers")
    _flag(ls, "-q", "--quiet", action="store_true")
    _flag(ls, "-f", "--format", default="table", choices=["table", "json"])
    spec = command("spec", cmd_spec, "write a default config.json")
    _flag(spec, "-b", "--bundle", default=None)
    _flag(spec, "--rootless", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = parser().parse_args(argv)
    log = Log(args.log, args.log_format)
    try:
        code = args.handler(args, Store(args.root))
    except AioRuntimeError as e:
        log.error(str(e))
        code = 1
    except OSError as e:
        log.error(f"{e.filename}: {e.strerror}" if e.filename else str(e))
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    # skip the interpreter's teardown (module and object finalisation): a few ms per call
    # that a container manager pays 3-4 times per container
    os._exit(code)
