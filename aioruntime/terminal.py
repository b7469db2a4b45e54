"""The master side of a container process's pty, as asyncio streams with a window size.

The pty itself is opened inside the container (a TERMINAL step of the plan, in the
container's devpts); the parent receives the master over the sync socket.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import termios

from .stdio import Streams, protocol_of


class _PtyProtocol(asyncio.StreamReaderProtocol):
    """A pty master reads EIO, not EOF, once no process holds the terminal any more."""

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            exc = None
        super().connection_lost(exc)


class Terminal:
    """``streams.stdout`` reads what the process writes to its terminal (with the terminal's
    own line discipline: ``\\n`` arrives as ``\\r\\n``), ``streams.stdin`` types to it."""

    def __init__(self, master: int, streams: Streams) -> None:
        self._fd = master  # for the ioctls; the transports hold their own duplicates
        self.streams = streams

    @classmethod
    async def open(cls, master: int) -> Terminal:
        """Streams on ``master``, which is the Terminal's from now on (closed on failure)."""
        loop = asyncio.get_running_loop()
        files = []
        transports: list[asyncio.BaseTransport] = []
        try:
            files = [os.fdopen(os.dup(master), mode, 0) for mode in ("rb", "wb")]
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(protocol_of(reader, _PtyProtocol), files[0])
            transports.append(transport)
            wtransport, protocol = await loop.connect_write_pipe(protocol_of(asyncio.StreamReader()), files[1])
            transports.append(wtransport)
        except BaseException:
            for t in transports:
                t.close()
            for f in files:
                f.close()
            os.close(master)
            raise
        return cls(master, Streams(asyncio.StreamWriter(wtransport, protocol, None, loop), reader))

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size; the process gets SIGWINCH."""
        if self._fd < 0:
            raise ValueError("the terminal is closed")
        fcntl.ioctl(self._fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def size(self) -> tuple[int, int]:
        """(rows, cols) of the window."""
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(self._fd, termios.TIOCGWINSZ, bytes(8)))
        return rows, cols

    def close(self) -> None:
        """Stop typing and resizing; what the process wrote stays readable until EOF."""
        if self.streams.stdin is not None:
            self.streams.stdin.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
