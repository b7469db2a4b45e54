"""OCI hooks the runtime runs in its own namespaces: prestart and createRuntime (create, at
the init's hooks point), poststart (start), poststop (delete). createContainer and
startContainer run in the container, from the compiled init (plan.HookStep).

Running hooks is a ``waits.Run``: the CLI drives it with ``poll``, the async facade with
the event loop's readers, so a slow hook never blocks a loop and no thread is needed.
Closing the generator early kills the running hook.
"""


import json
import os
import select
import signal
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import HookError
from .waits import Run, Wait

if TYPE_CHECKING:
    from .spec import Hook

OUTPUT_LIMIT = 2047  # what of a hook's stdout and stderr an error quotes (the init's limit too)


def state_json(state: Mapping[str, Any]) -> bytes:
    """The state document as a hook reads it on stdin: compact JSON, no newline (as runc)."""
    return json.dumps(state, separators=(",", ":")).encode()


def run_one(kind: str, hook: "Hook", state: bytes) -> Run[None]:
    """Run ``hook`` as our child, ``state`` on its stdin; HookError if it fails or outlives
    its timeout (it is killed then). Without ``env`` it gets ours, as runc's (Go's) hooks do."""
    child = _Child(kind, hook)
    try:
        deadline = None if hook.timeout is None else time.monotonic() + hook.timeout
        fed, exited = 0, False
        while not exited:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise HookError(kind, hook.path, 0, child.said(), timeout=hook.timeout)
            yield Wait((child.events.fileno(),), left)
            for fd, _ in child.events.poll(0):
                if fd == child.stdin:
                    fed = child.feed(state, fed)
                elif fd == child.output:
                    child.collect()
                else:
                    exited = True
        child.collect()  # what it wrote before it exited, not what its own children write on
        status = child.reap(kill=False)
        if status != 0:
            raise HookError(kind, hook.path, status, child.said())
    finally:
        child.close()


def run(kind: str, hooks: Iterable["Hook"], state: Mapping[str, Any]) -> Run[None]:
    """The hooks of one kind, in order: the first failure ends the run (HookError)."""
    data = state_json(state)
    for hook in hooks:
        yield from run_one(kind, hook, data)


def run_all(kind: str, hooks: Iterable["Hook"], state: Mapping[str, Any]) -> Run[list[HookError]]:
    """Every hook of one kind, whatever fails: the failures, for the caller to warn about
    (poststop: "the remaining hooks and lifecycle continue")."""
    data = state_json(state)
    failed = []
    for hook in hooks:
        try:
            yield from run_one(kind, hook, data)
        except HookError as e:
            failed.append(e)
    return failed


class _Child:
    """A hook being run: its pidfd, the pipes of its stdin and output, one epoll fd over them."""

    def __init__(self, kind: str, hook: "Hook") -> None:
        argv = list(hook.args) or [hook.path]
        env = dict(e.split("=", 1) for e in hook.env) if hook.env else os.environ
        in_r, self.stdin = os.pipe2(os.O_CLOEXEC)
        self.output, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.posix_spawn(
                hook.path, argv, env,
                file_actions=[(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, out_w, 2)],
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # ignored here, they would stay ignored
            )
        except OSError as e:
            for fd in (self.stdin, self.output):
                os.close(fd)
            raise HookError(kind, hook.path, 127, f"cannot execute the hook: {e.strerror}") from None
        finally:
            os.close(in_r)
            os.close(out_w)
        self.pidfd = os.pidfd_open(pid)  # our unreaped child: the pid cannot have been reused
        self.data = bytearray()
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.output, False)
        self.events = select.epoll(3)
        self.events.register(self.pidfd, select.EPOLLIN)
        self.events.register(self.output, select.EPOLLIN)
        self.events.register(self.stdin, select.EPOLLOUT)

    def feed(self, state: bytes, fed: int) -> int:
        """Write what the pipe takes; at the end (or EPIPE: it reads no stdin) close it: its EOF."""
        try:
            fed += os.write(self.stdin, state[fed:])
        except BlockingIOError:
            return fed
        except BrokenPipeError:
            fed = len(state)
        if fed >= len(state):
            self.events.unregister(self.stdin)
            os.close(self.stdin)
            self.stdin = -1
        return fed

    def collect(self) -> None:
        """Keep the first OUTPUT_LIMIT bytes of what the hook writes; drain the rest."""
        while self.output >= 0:
            try:
                chunk = os.read(self.output, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self.events.unregister(self.output)
                os.close(self.output)
                self.output = -1
                return
            self.data += chunk[: max(OUTPUT_LIMIT - len(self.data), 0)]

    def said(self) -> str:
        return bytes(self.data).decode(errors="replace")

    def reap(self, *, kill: bool) -> int:
        """Reap the hook (after SIGKILL if ``kill``): its status, minus the signal if one killed it."""
        try:
            if kill:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED)
        finally:
            os.close(self.pidfd)
            self.pidfd = -1
        assert info is not None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def close(self) -> None:
        """Kill and reap it if still there (failure, timeout, cancellation); close our fds."""
        if self.pidfd >= 0:
            self.reap(kill=True)
        self.events.close()
        for fd in (self.stdin, self.output):
            if fd >= 0:
                os.close(fd)
