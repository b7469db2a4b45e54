"""The container operations: synchronous, short, and never waiting without bound.

Where something must be awaited they hand out a file descriptor (sync socket, pidfd) and
the caller waits on it: the async facade on the event loop, the CLI with ``poll``.
"""

from .create import Creation
from .lifecycle import delete_begin, delete_finish, kill, oci_state, start, status_of

__all__ = ["Creation", "delete_begin", "delete_finish", "kill", "oci_state", "start", "status_of"]
