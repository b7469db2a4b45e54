"""A container's network namespace, and a netlink socket inside it, without fork().

pyroute2's ``netns=`` mode forks a helper that enters the namespace and sends a socket
back; forking a process that may have threads is what DESIGN.md forbids. A socket
belongs to the network namespace of the *thread* that creates it, and
``setns(CLONE_NEWNET)`` is allowed in a multithreaded process and changes only the
calling thread, so a short-lived thread enters the namespace, makes the socket and
ends; the socket is then handed to pyroute2 (``fileno=``). That thread is the one the
kernel's rule forces: the event loop's thread never changes namespace, and no pooled
thread is ever left inside a container's namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

from ..errors import NetworkError
from ..status import process_start_time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def open_netns(container_id: str, pid: int, pid_start: int) -> int:
    """An fd on the network namespace of the container's init ``pid``.

    Checked after opening against the init's start time, so a recycled pid can never
    hand us another process's namespace.
    """
    try:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1
    if fd >= 0 and process_start_time(pid) == pid_start:
        return fd
    if fd >= 0:
        os.close(fd)
    raise NetworkError(f"container {container_id} has no init any more: its network namespace is gone")


def netlink_socket(netns_fd: int, protocol: int = 0) -> int:
    """A netlink socket (NETLINK_ROUTE by default) in the namespace ``netns_fd``; the caller owns the fd."""
    result: list[int | BaseException] = []

    def enter_and_open() -> None:
        try:
            if _libc.setns(netns_fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into the container's network namespace: {os.strerror(err)}")
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, protocol)
            result.append(sock.detach())
        except BaseException as e:  # handed to the caller's thread
            result.append(e)

    thread = threading.Thread(target=enter_and_open, name="aioruntime-netns")
    thread.start()
    thread.join()  # setns + socket: microseconds
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]
