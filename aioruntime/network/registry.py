"""Networks and their endpoints on disk: ``<root>/.networks/<name>.json``, one lock for all.

The leading dot keeps the directory out of the containers' namespace: no container id
starts with one.

Everything a network hands out (an address, a host link name, an nft table) is written
here *before* it is made, so that a crash at any point leaves a record that a later
delete can clean up from, and an address is never handed out twice: allocation reads and
writes the file under an flock on ``<root>/.networks/.lock``, shared with every process
(library or CLI) using the same root. The lock is only ever held for synchronous work,
never across an await: a second flock from the same process would block its event loop.
"""


import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from ..errors import NetworkNotFoundError

# a network's name is its bridge's name: an interface name (at most 15 bytes, IFNAMSIZ - 1)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"invalid network name {name!r}: it names the bridge, so use 1 to 15 letters, "
            "digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


class PortMapping(NamedTuple):
    """Host port ``host`` forwarded to port ``container`` of the container's address."""

    host: int
    container: int
    protocol: str = "tcp"


class Endpoint(NamedTuple):
    """A container's place on a network: its address and what was made for it on the host."""

    container: str
    network: str
    address: str
    prefixlen: int
    gateway: str
    link: str  # the host end of the veth pair, enslaved to the bridge
    table: str = ""  # the nft table of its published ports and NAT; "" when it has none
    ports: tuple[PortMapping, ...] = ()
    nat: bool = False
    ifname: str = "eth0"  # the container's end, in its network namespace

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Endpoint":
        known = {k: v for k, v in data.items() if k in cls._fields}
        known["ports"] = tuple(PortMapping(*p) for p in known.get("ports", ()))
        return cls(**known)


class NetworkRecord(NamedTuple):
    name: str  # also the bridge's name
    subnet: str
    gateway: str  # the bridge's address, the containers' default route
    last: str = ""  # the address handed out last: the next search starts after it
    endpoints: tuple[Endpoint, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NetworkRecord":
        known = {k: v for k, v in data.items() if k in cls._fields}
        known["endpoints"] = tuple(Endpoint.from_json(e) for e in known.get("endpoints", ()))
        return cls(**known)

    def to_json(self) -> str:
        d = self._asdict()
        d["endpoints"] = [e._asdict() for e in self.endpoints]
        return json.dumps(d)


class Registry:
    """The networks under one runtime root."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.dir = os.path.join(self.root, ".networks")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, check_name(name) + ".json")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the registry's lock (made on first use)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.dir, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self, name: str) -> NetworkRecord:
        try:
            with open(self.path(name)) as f:
                return NetworkRecord.from_json(json.load(f))
        except FileNotFoundError:
            raise NetworkNotFoundError(name, self.root) from None

    def exists(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def save(self, record: NetworkRecord) -> None:
        """Replace the record whole (temporary file + rename): readers need no lock."""
        path = self.path(record.name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(record.to_json())
        os.rename(tmp, path)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))

    def records(self) -> list[NetworkRecord]:
        try:
            files = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        out = []
        for file in files:
            name, ext = os.path.splitext(file)
            if ext == ".json" and _NAME.match(name):
                try:
                    out.append(self.load(name))
                except NetworkNotFoundError:
                    continue  # removed meanwhile
        return out

    def endpoints_of(self, container_id: str) -> list[Endpoint]:
        return [e for r in self.records() for e in r.endpoints if e.container == container_id]
