"""Core operations that wait, without threads and without blocking an event loop.

An operation that must wait (a hook to exit, CRIU to answer, the init to report) is a
generator (``Run``) that yields what it waits for (``Wait``: fds to become readable, a
timeout) and returns its result. The CLI drives it with ``poll`` (``blocking``), the async
facade with the event loop's readers (``process.driven``). Closing the generator early
(an error, a cancellation) undoes what it started.
"""

import select
from collections.abc import Generator
from typing import NamedTuple, TypeVar

T = TypeVar("T")


class Wait(NamedTuple):
    """Wait until one of ``fds`` is readable, or ``timeout`` seconds have passed."""

    fds: tuple[int, ...]
    timeout: float | None = None


Run = Generator[Wait, None, T]


def blocking(run: Run[T]) -> T:
    """Drive ``run`` to its end with ``poll``: for callers without an event loop."""
    try:
        wait = next(run)
        while True:
            poller = select.poll()
            for fd in wait.fds:
                poller.register(fd, select.POLLIN)
            poller.poll(None if wait.timeout is None else max(wait.timeout, 0) * 1000)
            wait = run.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        run.close()
