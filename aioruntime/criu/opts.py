"""What checkpoint and restore tell CRIU alike, and how they report its failures."""

from __future__ import annotations

import os
from typing import Protocol

from ..errors import AioRuntimeError, CriuError
from . import rpc_pb2 as rpc

CGROUP_MODES = {"soft": rpc.SOFT, "full": rpc.FULL, "strict": rpc.STRICT, "ignore": rpc.IGNORE}


class Flags(Protocol):
    """The flags runc's checkpoint and restore both take."""

    @property
    def tcp_established(self) -> bool: ...
    @property
    def ext_unix_sk(self) -> bool: ...
    @property
    def shell_job(self) -> bool: ...
    @property
    def file_locks(self) -> bool: ...


def cgroup_mode(name: str | None) -> int | None:
    if name is None or name == "":
        return None
    try:
        return CGROUP_MODES[name]
    except KeyError:
        raise AioRuntimeError(f"invalid manage-cgroups-mode {name!r}: expected one of {', '.join(CGROUP_MODES)}") from None


def common(images: int, work: int, log_file: str, mode: int | None, flags: Flags) -> rpc.criu_opts:
    """The options a dump and a restore share (runc's choices): a verbose log, cgroups
    managed, notifications on, an orphaned pty master handed back to us."""
    opts = rpc.criu_opts(
        images_dir_fd=images,
        log_level=4,
        log_file=log_file,
        manage_cgroups=True,
        notify_scripts=True,
        orphan_pts_master=True,
        tcp_established=flags.tcp_established,
        ext_unix_sk=flags.ext_unix_sk,
        shell_job=flags.shell_job,
        file_locks=flags.file_locks,
    )
    if mode is not None:
        opts.manage_cgroups_mode = mode  # type: ignore[assignment]
    if work >= 0:
        opts.work_dir_fd = work
    return opts


def open_dir(path: str) -> int:
    """Make ``path`` (0700, it holds memory images) if needed and open it for CRIU."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def with_log(error: CriuError, log: str) -> CriuError:
    """``error`` with CRIU's last error line from ``log`` (the cause, where the first one
    CRIU answers with may be a harmless warning) and where to read the rest."""
    last = ""
    try:
        with open(log, errors="replace") as f:
            for line in f:
                if "Error" in line and not line.rstrip().endswith("FAILED."):  # not the summary
                    last = line.strip()
    except OSError:
        return error
    what = str(error).partition(": ")[0]
    return CriuError(f"{what}: {last or error}; see {log}", log)
