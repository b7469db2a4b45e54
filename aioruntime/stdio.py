"""A child's stdio as ``asyncio.create_subprocess_exec`` takes it (None to inherit ours, a
file descriptor or file, ``DEVNULL``, ``PIPE``, and ``STDOUT`` for stderr), and our ends of
its pipes as streams."""


import asyncio
import os
import subprocess
from collections.abc import Callable
from typing import IO, Any, NamedTuple

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

Stdio = int | IO[Any] | None


class Streams(NamedTuple):
    """Our side of a child's stdio: a writer for its stdin, readers for its stdout and stderr."""

    stdin: asyncio.StreamWriter | None = None
    stdout: asyncio.StreamReader | None = None
    stderr: asyncio.StreamReader | None = None


class ChildStdio:
    """The fds of one child's stdio while it is being started.

    ``child`` is what the child gets on 0, 1, 2 (-1: inherit ours); ``started()`` closes our
    copies of its ends once it has them; ``connect()`` makes streams of our ends of the
    PIPEs; ``close()`` gives up on all of them (failure, cancellation).
    """

    def __init__(self, spec: tuple[Stdio, Stdio, Stdio]) -> None:
        child: list[int] = []
        self._ours: list[int | None] = []
        self._theirs: list[int] = []  # made here for the child: ours to close once it has them
        try:
            for i, s in enumerate(spec):
                if s is None:
                    child.append(-1)
                    self._ours.append(None)
                elif s == PIPE:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    child.append(r if i == 0 else w)
                    self._ours.append(w if i == 0 else r)
                    self._theirs.append(child[-1])
                elif s == STDOUT and i == 2:
                    child.append(child[1])  # its stdout, whatever that is (-1: ours)
                    self._ours.append(None)
                elif s == DEVNULL:
                    fd = os.open(os.devnull, (os.O_RDONLY if i == 0 else os.O_WRONLY) | os.O_CLOEXEC)
                    child.append(fd)
                    self._ours.append(None)
                    self._theirs.append(fd)
                else:
                    child.append(s if isinstance(s, int) else s.fileno())
                    self._ours.append(None)
        except BaseException:
            self.close()
            raise
        self.child = (child[0], child[1], child[2])

    def started(self) -> None:
        for fd in self._theirs:
            os.close(fd)
        self._theirs = []

    def close(self) -> None:
        self.started()
        for fd in self._ours:
            if fd is not None:
                os.close(fd)
        self._ours = [None, None, None]

    async def connect(self) -> Streams:
        """Wrap our PIPE ends in streams (they are theirs from then on); on failure or
        cancellation close every one."""
        loop = asyncio.get_running_loop()
        files = [os.fdopen(fd, "wb" if i == 0 else "rb", 0) if fd is not None else None for i, fd in enumerate(self._ours)]
        self._ours = [None, None, None]
        transports: list[asyncio.BaseTransport] = []
        try:
            writer = None
            if files[0] is not None:
                transport, protocol = await loop.connect_write_pipe(protocol_of(asyncio.StreamReader()), files[0])
                transports.append(transport)
                writer = asyncio.StreamWriter(transport, protocol, None, loop)
            readers: list[asyncio.StreamReader | None] = []
            for f in files[1:]:
                reader = None
                if f is not None:
                    reader = asyncio.StreamReader()
                    rtransport, _ = await loop.connect_read_pipe(protocol_of(reader), f)
                    transports.append(rtransport)
                readers.append(reader)
            return Streams(writer, readers[0], readers[1])
        except BaseException:
            for t in transports:
                t.close()
            for f in files:
                if f is not None:
                    f.close()
            raise


def protocol_of(
    reader: asyncio.StreamReader, kind: type[asyncio.StreamReaderProtocol] = asyncio.StreamReaderProtocol
) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: kind(reader)
