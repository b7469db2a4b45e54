"""Container state on disk: ``<root>/<id>/state.json`` beside ``exec.fifo``.

Written to a temporary file and renamed, and guarded by an flock on the container's
directory, so the CLI and any number of library processes can manage the same containers.
"""


import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

from .errors import ContainerExistsError, ContainerNotFoundError, InvalidIdError

# as runc: root's containers under /run, an unprivileged user's under $XDG_RUNTIME_DIR
DEFAULT_ROOT = (
    os.path.join(os.environ["XDG_RUNTIME_DIR"], "aioruntime")
    if os.geteuid() != 0 and os.environ.get("XDG_RUNTIME_DIR")
    else "/run/aioruntime"
)
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-.")


def _valid_id(name: str) -> bool:
    """runc's rule: 1 to 1024 of ``[A-Za-z0-9_+.-]``, not starting with a dot (str methods:
    a regex compiled at import is time every CLI call pays)."""
    return 0 < len(name) <= 1024 and name[0] != "." and _ID_CHARS.issuperset(name)


def check_id(container_id: str) -> str:
    if not _valid_id(container_id):
        raise InvalidIdError(container_id)
    return container_id


class State(NamedTuple):
    """What a container needs to be found and managed again by another process."""

    id: str
    bundle: str
    rootfs: str
    created: str  # RFC 3339 with nanoseconds, UTC, as runc writes it
    config: dict[str, Any]  # the OCI config it was created from, as given
    cgroup_paths: dict[str, str]  # hierarchy mountpoint -> the container's cgroup directory
    cgroups_made: tuple[str, ...] = ()  # what delete removes
    pid: int = 0  # 0 while creating
    pid_start: int = 0  # start time of pid, to tell it from a reused pid
    annotations: dict[str, str] = {}  # noqa: RUF012 - never mutated: a NamedTuple is replaced, not edited
    owner: str = ""
    session_keyring: str = ""  # the init's session keyring, which exec joins ("": the caller's)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "State":
        known = {k: v for k, v in data.items() if k in cls._fields}
        known["cgroups_made"] = tuple(known.get("cgroups_made", ()))
        return cls(**known)


class Store:
    """The root directory holding one directory per container."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT) -> None:
        self.root = os.path.abspath(os.fspath(root))

    def dir(self, container_id: str) -> str:
        return os.path.join(self.root, check_id(container_id))

    def fifo(self, container_id: str) -> str:
        return os.path.join(self.dir(container_id), "exec.fifo")

    def reserve(self, container_id: str) -> int:
        """Make the container's directory, failing if it exists; return an O_PATH fd on it."""
        path = self.dir(container_id)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise ContainerExistsError(container_id) from None
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    @contextlib.contextmanager
    def lock(self, container_id: str) -> Iterator[None]:
        """Hold the container's lock; ContainerNotFoundError when it has no directory."""
        try:
            fd = os.open(self.dir(container_id), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFoundError(container_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def save(self, state: State) -> None:
        path = os.path.join(self.dir(state.id), "state.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(state._asdict()))  # one write: json.dump writes piece by piece
        os.rename(tmp, path)

    def load(self, container_id: str) -> State:
        try:
            with open(os.path.join(self.dir(container_id), "state.json")) as f:
                return State.from_json(json.load(f))
        except FileNotFoundError:
            raise ContainerNotFoundError(container_id) from None

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _valid_id(n) and os.path.exists(os.path.join(self.root, n, "state.json")))

    def remove(self, container_id: str) -> None:
        """Remove the container's directory and the few files it holds (no subdirectories)."""
        path = self.dir(container_id)
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
