"""Typed errors: each names what was wrong and what was expected, so a person can act on it."""

from __future__ import annotations


class AioRuntimeError(Exception):
    """Base of every error aioruntime raises on purpose."""


class ConfigError(AioRuntimeError):
    """The OCI config is unreadable or invalid; ``path`` is the JSON path of the bad field."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class InvalidIdError(AioRuntimeError):
    """A container id that could escape the state directory or is otherwise unusable."""

    def __init__(self, container_id: str) -> None:
        self.id = container_id
        super().__init__(
            f"invalid container id {container_id!r}: use 1 to 1024 characters from "
            "letters, digits, '_', '+', '-' and '.', not starting with '.'"
        )


class ContainerExistsError(AioRuntimeError):
    def __init__(self, container_id: str) -> None:
        self.id = container_id
        super().__init__(f"container with id exists: {container_id}")


class ContainerNotFoundError(AioRuntimeError):
    def __init__(self, container_id: str) -> None:
        self.id = container_id
        super().__init__(f"container does not exist: {container_id}")


class InvalidStateError(AioRuntimeError):
    """An operation was asked of a container in a status that does not allow it."""

    def __init__(self, container_id: str, operation: str, current: str, required: tuple[str, ...]) -> None:
        self.id = container_id
        self.operation = operation
        self.current = current
        self.required = required
        super().__init__(
            f"cannot {operation} container {container_id}: it is {current}, "
            f"needs to be {' or '.join(required)}"
        )


class SpawnError(AioRuntimeError):
    """The container's init failed before it could run the user's program.

    ``step`` is what it was doing (``mount``, ``pivot_root``, ``exec`` ...), ``path`` what it
    was doing it to, ``errno`` the kernel's answer (0 when not an errno failure).
    """

    def __init__(self, step: str, path: str, errno: int, message: str) -> None:
        self.step = step
        self.path = path
        self.errno = errno
        super().__init__(message)


class HookError(AioRuntimeError):
    """An OCI hook failed: ``kind`` (prestart, createRuntime, createContainer, startContainer,
    poststart, poststop), its ``path``, its exit ``status`` (minus the signal that killed it),
    whether it ran past its ``timeout``, and the start of what it wrote (stdout and stderr)."""

    def __init__(self, kind: str, path: str, status: int, output: str, *, timeout: int | None = None) -> None:
        self.kind = kind
        self.path = path
        self.status = status
        self.output = output
        self.timed_out = timeout is not None
        if timeout is not None:
            why = f"ran past its timeout of {timeout}s and was killed"
        elif status < 0:
            why = f"was killed by signal {-status}"
        else:
            why = f"exited with status {status}"
        said = output.strip()
        super().__init__(f"{kind} hook {path} {why}" + (f": {said}" if said else ""))


class CgroupError(AioRuntimeError):
    """A cgroup could not be created, joined or removed."""


class IgnoredSettingWarning(UserWarning):
    """A config setting accepted but not applied, as runc does (kernel memory limits)."""


class ResourceError(CgroupError):
    """A resource limit the kernel lacks or refused; ``field`` is its JSON path
    (``linux.resources.memory.limit``). Nothing of the request was left applied."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class CriuError(AioRuntimeError):
    """CRIU is missing, too old, or failed a checkpoint or restore; ``log`` is its log file."""

    def __init__(self, message: str, log: str | None = None) -> None:
        self.log = log
        super().__init__(message)


class CheckpointNotFoundError(AioRuntimeError):
    """A restore was asked from a directory that holds no checkpoint."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"no checkpoint to restore in {path}: {reason}")


# -- networking (aioruntime.network) -------------------------------------------------------


class NetworkError(AioRuntimeError):
    """A network could not be made, joined or removed; the message says what the kernel or nft said."""


class NetworkExistsError(NetworkError):
    def __init__(self, name: str, root: str) -> None:
        self.name = name
        super().__init__(f"network {name} exists under {root}: load it with Network.load({name!r}) or pick another name")


class NetworkNotFoundError(NetworkError):
    def __init__(self, name: str, root: str) -> None:
        self.name = name
        super().__init__(f"no network {name} under {root}: make it with Network.create({name!r}, subnet=...)")


class BridgeInUseError(NetworkError):
    """The host already has a link with the bridge's name (ours from another root, or not ours at all)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"bridge name {name} is in use: the host has a link called {name}; pick another network name")


class SubnetClashError(NetworkError):
    """The subnet overlaps another network's or a route the host already has."""

    def __init__(self, subnet: str, other: str) -> None:
        self.subnet = subnet
        self.other = other
        super().__init__(f"subnet {subnet} overlaps {other}: pick a subnet no route or network on this host uses")


class SubnetExhaustedError(NetworkError):
    def __init__(self, name: str, subnet: str, used: int) -> None:
        self.name = name
        self.subnet = subnet
        super().__init__(
            f"network {name} ({subnet}) has no free address: {used} containers hold one; "
            "delete one of them or use a network with a larger subnet"
        )


class NetworkInUseError(NetworkError):
    """``Network.delete()`` while containers are attached (``force=True`` detaches them first)."""

    def __init__(self, name: str, containers: tuple[str, ...]) -> None:
        self.name = name
        self.containers = containers
        super().__init__(
            f"network {name} has containers attached: {', '.join(containers)}; "
            "delete them first or pass force=True to detach them"
        )


class NoNetworkNamespaceError(NetworkError):
    """A network was asked for a container that shares the host's network namespace."""

    def __init__(self, container_id: str) -> None:
        self.id = container_id
        super().__init__(
            f"container {container_id} has no network namespace of its own: add "
            '{"type": "network"} to linux.namespaces in its config.json to give it a network'
        )


class PortInUseError(NetworkError):
    def __init__(self, port: int, protocol: str, container_id: str) -> None:
        self.port = port
        self.protocol = protocol
        self.container = container_id
        super().__init__(f"host port {port}/{protocol} is already published by container {container_id}")
