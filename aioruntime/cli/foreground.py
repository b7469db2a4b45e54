"""runc's foreground mode (``run``, ``exec`` without ``-d``): the command stays until the
container's process exits, forwards the signals it gets to the process, relays its
terminal if it has one, and exits with its status. No asyncio: a plain ``poll``."""

from __future__ import annotations

import errno
import os
import select
import signal

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class Forwarder:
    """runc's signal handling in the foreground. Installed before the process starts, so that
    a signal arriving meanwhile is held and forwarded once it runs, instead of ending us and
    leaving the process, unreaped, to whoever reaps our orphans."""

    def __init__(self) -> None:
        self._pidfd = -1
        self._held: list[int] = []
        for sig in FORWARDED:
            signal.signal(sig, self._receive)

    def _receive(self, signum: int, _frame: object) -> None:
        if self._pidfd < 0:
            self._held.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except ProcessLookupError:
            pass

    def wait(self, pidfd: int, master: int = -1) -> int:
        """Forward to our child ``pidfd`` (what was held first), relay the pty ``master`` (if
        >= 0), reap it: its exit status, 128+N if signal N killed it (as runc exits)."""
        self._pidfd = pidfd
        for signum in self._held:
            self._send(signum)
        self._held.clear()
        if master >= 0:
            relay(master, pidfd)
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        assert info is not None
        return info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status


def _host_terminal() -> int:
    """Our own terminal, as runc looks for it (stderr, stdout, stdin), or -1."""
    return next((fd for fd in (2, 1, 0) if os.isatty(fd)), -1)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _read(fd: int) -> bytes:
    """What there is to read; b"" at the end (a pty master reads EIO once nobody holds the
    terminal any more), and when a non-blocking read finds nothing."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""
    except OSError as e:
        if e.errno == errno.EIO:
            return b""
        raise


def relay(master: int, pidfd: int) -> None:
    """Copy our stdin to the process's terminal and its output to our stdout until it exits.

    Our own terminal, if we have one, is put in raw mode meanwhile (keys go to the process
    unchanged) and its window size is passed on now and on every SIGWINCH.
    """
    import fcntl
    import termios
    import tty

    host = _host_terminal()

    def resize(_signum: int = 0, _frame: object = None) -> None:
        if host >= 0:
            fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(host, termios.TIOCGWINSZ, bytes(8)))

    saved = termios.tcgetattr(host) if host >= 0 else None
    try:
        resize()
        signal.signal(signal.SIGWINCH, resize)
        if host >= 0:
            tty.setraw(host)
        poller = select.poll()
        for fd in (master, 0, pidfd):
            poller.register(fd, select.POLLIN)
        while True:
            events = poller.poll()
            for fd, event in events:
                if event & select.POLLNVAL:  # no stdin at all
                    poller.unregister(fd)
                    continue
                if fd == pidfd:
                    os.set_blocking(master, False)  # what it left in the terminal, then done
                    while data := _read(master):
                        _write_all(1, data)
                    return
                data = _read(fd)
                if not data:
                    poller.unregister(fd)  # stdin at its end, or the terminal closed: go on waiting
                else:
                    _write_all(1 if fd == master else master, data)
    finally:
        signal.signal(signal.SIGWINCH, signal.SIG_DFL)
        if saved is not None:
            termios.tcsetattr(host, termios.TCSAFLUSH, saved)
        os.close(master)
