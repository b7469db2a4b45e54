"""The container operations: synchronous, short, and never waiting without bound.

Where something must be awaited they hand out a file descriptor (sync socket, pidfd) and
the caller waits on it: the async facade on the event loop, the CLI with ``poll``.
Nothing is imported here, so ``state`` or ``kill`` never load what ``create`` needs.
"""
