"""The terminal of a process being started: its pty master goes over runc's console socket
(``--console-socket``: a unix socket a container manager listens on, one message with the
fd attached), or stays with the caller."""

from __future__ import annotations

import os

from .. import spawn
from ..errors import ConfigError
from ..spec import Process


class Console:
    def __init__(self, process: Process, socket_path: str | None) -> None:
        """Connect to the console socket before anything is spawned, so that a bad path
        fails early, as in runc."""
        self.master = -1  # the pty master once received, if no console socket took it
        self._sock = -1
        if socket_path is not None:
            if not process.terminal:
                raise ConfigError("process.terminal", "a console socket was given but the process has no terminal")
            self._sock = spawn.connect_socket(socket_path)

    def receive(self, init: spawn.Init) -> None:
        """Read the process's ready report (SpawnError if it failed) and the master with it."""
        master = spawn.read_report(init)
        if master >= 0 and self._sock >= 0:
            try:
                spawn.send_fd(self._sock, master)
            finally:
                os.close(master)
            master = -1
        self.master = master
        self.close_socket()

    def close_socket(self) -> None:
        if self._sock >= 0:
            os.close(self._sock)
            self._sock = -1

    def close(self) -> None:
        """Give up: the connection and any master received."""
        self.close_socket()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
