"""One ``criu swrk`` session: requests and answers over a SOCK_SEQPACKET socketpair.

An exchange is a ``waits.Run`` that waits on the socket, then on criu's pidfd, and returns
CRIU's answer: neither a thread nor a blocking read is ever needed while CRIU works.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence

from ..errors import CriuError
from ..waits import Run, Wait
from . import rpc_pb2 as rpc

NotifyHandler = Callable[["rpc.criu_notify", list[int]], "Run[None] | None"]
_MAX_MESSAGE = 10 * 4096  # runc's buffer: answers are small, a larger one is an error


class Swrk:
    """A running ``criu swrk``; ``stdio`` become its fds 0-2, -1 meaning ours (a restored
    tree's stdio: criu passes on its own where ``inherit_fd`` says)."""

    def __init__(self, criu: str, *, stdio: Sequence[int] = (-1, -1, -1)) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [criu, "swrk", str(theirs.fileno())],
                stdin=stdio[0] if stdio[0] >= 0 else None,
                stdout=stdio[1] if stdio[1] >= 0 else None,
                stderr=stdio[2] if stdio[2] >= 0 else None,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as e:
            ours.close()
            raise CriuError(f"cannot run {criu}: {e.strerror}") from e
        finally:
            theirs.close()  # criu holds the only other end: its death ends our reads
        self.sock = ours
        self.sock.setblocking(False)
        self.pidfd = os.pidfd_open(self.process.pid)

    def call(self, request: rpc.criu_req, on_notify: NotifyHandler | None = None) -> Run[rpc.criu_resp]:
        """Send ``request``; answer CRIU's notifications (``on_notify`` gets each one and the
        fds it carried, closed afterwards, and may return a Run to finish first, such as
        hooks); return the final answer, or raise CriuError."""
        self.sock.send(request.SerializeToString())
        while True:
            yield Wait((self.sock.fileno(),))
            data, fds, _, _ = socket.recv_fds(self.sock, _MAX_MESSAGE, 4)
            try:
                if not data:
                    raise CriuError(f"criu exited during {rpc.criu_req_type.Name(request.type)}")
                if len(data) == _MAX_MESSAGE:
                    raise CriuError("criu's answer is larger than expected")
                answer = rpc.criu_resp()
                answer.ParseFromString(data)
                if not answer.success:
                    raise CriuError(_failure(request, answer))
                if answer.type != rpc.NOTIFY:
                    return answer
                then = on_notify(answer.notify, fds) if on_notify is not None else None
                if then is not None:
                    yield from then
            finally:
                for fd in fds:
                    os.close(fd)
            self.sock.send(rpc.criu_req(type=rpc.NOTIFY, notify_success=True).SerializeToString())

    def finish(self) -> Run[int]:
        """Hang up and reap criu (it exits at the end of its requests); its exit status."""
        self.sock.shutdown(socket.SHUT_WR)
        yield Wait((self.pidfd,))
        self.sock.close()
        return self._reap()

    def kill(self) -> None:
        """Abandon the session: SIGKILL and reap criu (for errors and cancellation)."""
        self.sock.close()
        if self.process.returncode is not None:
            return  # reaped by finish()
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap()

    def _reap(self) -> int:
        code = self.process.wait()
        os.close(self.pidfd)
        return code


def _failure(request: rpc.criu_req, answer: rpc.criu_resp) -> str:
    what = rpc.criu_req_type.Name(request.type).lower().replace("_", "-")
    reason = answer.cr_errmsg.strip() or (os.strerror(answer.cr_errno) if answer.cr_errno else "")
    return f"criu {what} failed" + (f": {reason}" if reason else "")
