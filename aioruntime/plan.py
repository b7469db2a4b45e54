"""Turn an OCI spec into the flat, ordered list of steps the compiled init carries out.

Every decision about the container's filesystem, identity and process is taken here, in
Python, where it can be read and unit-tested; ``_clone.c`` executes the steps blindly.
Paths before the ``PivotRoot`` step are host paths (rootfs-prefixed), after it container
paths. ``build`` plans a container's init, ``build_exec`` a process joining a running one;
both end with the same ``process_steps``.

Annotations are not postponed, as in ``spec/model.py``: a string annotation costs NamedTuple
a compile, and the CLI imports this module on every create and exec.
"""

import json
import os
import posixpath
import resource
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .errors import ConfigError
from .namespaces import KINDS, InitNamespaces, init_namespaces, is_ours_path
from .spec import Capabilities, Hook, Linux, Mount, Process, Spec
from .spec.names import CAPABILITIES
from .spec.scheduling import IOPRIO_CLASS_SHIFT, IOPRIO_CLASSES, SCHED_FLAGS, SCHED_POLICIES

# <sys/mount.h>
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_REMOUNT = 1, 2, 4, 8, 16, 32
MS_MANDLOCK, MS_DIRSYNC, MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME = 64, 128, 256, 1024, 2048
MS_BIND, MS_MOVE, MS_REC, MS_SILENT = 4096, 8192, 16384, 32768
MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 18, 1 << 19, 1 << 20
MS_RELATIME, MS_I_VERSION, MS_STRICTATIME, MS_LAZYTIME = 1 << 21, 1 << 23, 1 << 24, 1 << 25

# option -> (flags to clear, flags to set)
MOUNT_FLAGS: dict[str, tuple[int, int]] = {
    "ro": (0, MS_RDONLY), "rw": (MS_RDONLY, 0),
    "nosuid": (0, MS_NOSUID), "suid": (MS_NOSUID, 0),
    "nodev": (0, MS_NODEV), "dev": (MS_NODEV, 0),
    "noexec": (0, MS_NOEXEC), "exec": (MS_NOEXEC, 0),
    "sync": (0, MS_SYNCHRONOUS), "async": (MS_SYNCHRONOUS, 0),
    "dirsync": (0, MS_DIRSYNC), "remount": (0, MS_REMOUNT),
    "mand": (0, MS_MANDLOCK), "nomand": (MS_MANDLOCK, 0),
    "atime": (MS_NOATIME, 0), "noatime": (0, MS_NOATIME),
    "diratime": (MS_NODIRATIME, 0), "nodiratime": (0, MS_NODIRATIME),
    "relatime": (0, MS_RELATIME), "norelatime": (MS_RELATIME, 0),
    "strictatime": (0, MS_STRICTATIME), "nostrictatime": (MS_STRICTATIME, 0),
    "lazytime": (0, MS_LAZYTIME), "nolazytime": (MS_LAZYTIME, 0),
    "iversion": (0, MS_I_VERSION), "noiversion": (MS_I_VERSION, 0),
    "silent": (0, MS_SILENT), "loud": (MS_SILENT, 0),
    "nosymfollow": (0, MS_NOSYMFOLLOW), "symfollow": (MS_NOSYMFOLLOW, 0),
    "bind": (0, MS_BIND), "rbind": (0, MS_BIND | MS_REC),
}
PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}
# options runc accepts that change how a mount is made, not mount(2) flags or data
_IGNORED_OPTIONS = frozenset({"tmpcopyup", "idmap", "ridmap", "nocopyup", "copyup"})

NAMESPACE_FLAGS: dict[str, int] = {kind: flag for kind, (flag, _) in KINDS.items()}
CLONE_NEWCGROUP = NAMESPACE_FLAGS["cgroup"]
CLONE_NEWUSER = NAMESPACE_FLAGS["user"]
CLONE_NEWNS = NAMESPACE_FLAGS["mount"]
# exec joins in runc's order (libcontainer's NamespaceTypes): user first, for the
# capabilities over the others; mount after pid and net, whose files it would hide.
# type -> (name under /proc/PID/ns, CLONE_NEW*)
JOIN_ORDER: dict[str, tuple[str, int]] = {kind: (name, flag) for kind, (flag, name) in KINDS.items()}

S_IFCHR, S_IFBLK, S_IFIFO = 0o020000, 0o060000, 0o010000
KEY_USR_SEARCH, KEY_OTH_SEARCH = 0x00080000, 0x00000008  # keyring permissions (keyutils.h)
DEVICE_TYPES = {"c": S_IFCHR, "u": S_IFCHR, "b": S_IFBLK, "p": S_IFIFO}
# (path, major, minor): what runc creates in every container with its own /dev
DEFAULT_DEVICES = (
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
    ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
)
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
)

RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
MAX_STRINGS = 4096  # AIO_MAX_STRS in _clone.h: strings in one record (argv, env)
MAX_START_HOOKS = 64  # AIO_MAX_HOOKS in _clone.h
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# The steps. Field order is the wire order: ints first, then strings (see encode()).
class MountStep(NamedTuple):
    source: str
    target: str
    fstype: str = ""
    data: str = ""
    flags: int = 0
    make: int = 0  # 0: target exists, 1: mkdir -p, 2: create a file (for a file bind)


class MkdirStep(NamedTuple):
    path: str
    mode: int = 0o755


class MknodStep(NamedTuple):
    path: str
    mode: int
    major: int
    minor: int
    uid: int = 0
    gid: int = 0


class SymlinkStep(NamedTuple):
    target: str
    link: str


class UnlinkStep(NamedTuple):
    path: str


class RootfsStep(NamedTuple):
    """From here, host paths below ``rootfs`` are resolved inside it, never through a symlink out."""

    rootfs: str


class PivotRootStep(NamedTuple):
    rootfs: str


class MoveRootStep(NamedTuple):
    """--no-pivot: move the rootfs onto / and chroot, for roots pivot_root refuses (ramfs)."""

    rootfs: str


class ChrootStep(NamedTuple):
    """No mount namespace of the container's own (none, or one joined by path): chroot into
    the rootfs and mount nothing, as crun does; mounts made there would be the host's (or
    the joined namespace's) and outlive the container."""

    rootfs: str


class MaskStep(NamedTuple):
    path: str


class ReadonlyStep(NamedTuple):
    path: str
    bind: bool = True  # False for the root, already a mount point


class HostnameStep(NamedTuple):
    name: str


class DomainnameStep(NamedTuple):
    name: str


class LoopbackUpStep(NamedTuple):
    """Bring ``lo`` up in the container's new network namespace, as runc and crun do.

    In the init (one ioctl) rather than through pyroute2 afterwards: every container with
    its own network namespace needs it, also those the CLI creates, which cannot import
    pyroute2 (it imports asyncio); and it is done before anything of the user's runs.
    """


class RlimitStep(NamedTuple):
    name: str
    soft: int
    hard: int


class KeepCapsStep(NamedTuple):
    on: bool


class UserStep(NamedTuple):
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    setgroups: bool = True  # False where the user namespace denies it (rootless)


class BoundingStep(NamedTuple):
    """Drop from the bounding set; before the uid switch, which clears the effective set."""

    keep: int  # mask of capabilities to keep


class CapsStep(NamedTuple):
    effective: int
    permitted: int
    inheritable: int
    ambient: int


class NoNewPrivsStep(NamedTuple):
    on: bool = True


class WriteFileStep(NamedTuple):
    """Write ``content`` to an existing file: a sysctl under /proc/sys, oom_score_adj."""

    path: str
    content: str


class PersonalityStep(NamedTuple):
    persona: int  # personality(2): the execution domain and its flags


class SeccompStep(NamedTuple):
    """Load the BPF filter; ``late`` (with no_new_privileges) loads it after every other step,
    just before the init reports ready, so as few syscalls as possible run under it.
    Without no_new_privileges it must come before the capabilities are dropped: loading a
    filter then needs CAP_SYS_ADMIN (as runc orders it)."""

    program: bytes
    flags: int
    late: bool


class IoPriorityStep(NamedTuple):
    """ioprio_set(IOPRIO_WHO_PROCESS, 0, ``value``): inherited by what the process starts."""

    value: int  # class << 13 | level


class SchedulerStep(NamedTuple):
    """sched_setattr(0, ...); before the capabilities go (a real-time policy needs CAP_SYS_NICE)."""

    policy: int
    flags: int = 0
    nice: int = 0
    priority: int = 0
    runtime: int = 0
    deadline: int = 0
    period: int = 0


class UmaskStep(NamedTuple):
    mask: int


class ChdirStep(NamedTuple):
    path: str
    before_user: bool = False  # as root; on EACCES retried by the step after the user switch


class WaitGoStep(NamedTuple):
    """Wait for the parent's go, join the v1 cgroups, then unshare ``unshare``.

    The init is cloned straight into its cgroup2 cgroup (CLONE_INTO_CGROUP) and joins the
    v1 hierarchies through their ``tasks`` files: moving one thread, the kernel takes no
    thread-group lock, so neither pays the RCU grace period (10-25 ms here) that a
    ``cgroup.procs`` write waits for after a quiet spell. The files arrive opened with the
    go (the opener's credentials are what the kernel checks: this works from a user
    namespace too). Placed before the first cgroup mount, else before the process settings.
    """

    join: tuple[str, ...] = ()  # the tasks file of each v1 hierarchy
    unshare: int = 0
    cgroupns: str = ""  # a cgroup namespace to join (by path), after the cgroups: it arrives opened with the go


class WaitMapsStep(NamedTuple):
    """In a new user namespace: wait until the parent has written the uid and gid maps; then
    (in a joined one at once) become the namespace's root.

    First of all steps: until then every file the init touches would be unmapped."""

    wait: bool = True  # False: the user namespace was joined by path, its maps are written


class TerminalStep(NamedTuple):
    """Open a pty in the container's devpts; its peer becomes stdio and the controlling
    terminal, the master goes to the parent with the ready report (runc opens it inside
    the container too, so the pty belongs to the container's devpts)."""

    rows: int = 0  # 0: the kernel's default size
    cols: int = 0
    uid: int = 0  # owner of the peer: the process's user controls its terminal
    console: bool = False  # the init's: bind the peer onto /dev/console


class SessionKeyringStep(NamedTuple):
    """Join a new session keyring ``name`` (``_ses.<id>``, as runc names it) instead of
    keeping the caller's (``--no-new-keyring``); ``search`` are the permission bits added
    so the container's processes can search it (0 for an exec, which joins the init's)."""

    name: str
    search: int = 0


class HooksPointStep(NamedTuple):
    """Report to the parent and wait while it runs the prestart and createRuntime hooks in the
    runtime's namespaces: the container's namespaces exist, the init is in its cgroups, its
    mounts are made and its root not yet pivoted (runc's procHooks). After the WaitGoStep."""


class HookStep(NamedTuple):
    """A hook the init runs itself, in the container's namespaces: a createContainer hook
    here (before pivot_root: its path is the host's), a startContainer one (``after_start``)
    once start has released the init, just before execve (its path is the container's).
    ``state_head`` + the init's pid + ``state_tail`` is the state on its stdin (the init
    writes getpid(), as runc's init does)."""

    kind: str
    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    timeout: int  # seconds, 0 for none
    state_head: str
    state_tail: str
    after_start: bool = False


class ExecStep(NamedTuple):
    args: tuple[str, ...]
    env: tuple[str, ...]


Step = (
    MountStep | MkdirStep | MknodStep | SymlinkStep | UnlinkStep | PivotRootStep | MoveRootStep
    | RootfsStep | MaskStep | ReadonlyStep | HostnameStep | DomainnameStep | LoopbackUpStep | RlimitStep
    | KeepCapsStep | UserStep | BoundingStep | CapsStep | NoNewPrivsStep | UmaskStep | ChdirStep | WaitGoStep
    | ExecStep | WriteFileStep | PersonalityStep | SeccompStep | WaitMapsStep | TerminalStep | SessionKeyringStep
    | HooksPointStep | HookStep | ChrootStep | IoPriorityStep | SchedulerStep
)


class Join(NamedTuple):
    """How an exec'd process enters a running container, or an init the namespaces its
    config names by path, before its steps run.

    The parent opens every file (their host paths do not resolve in the container); the
    compiled intermediate setns()es into ``namespaces`` (the user namespace in runc's place,
    see _clone.c), unshares a time namespace with ``time_offsets``, chroots to the init's
    root, and clones the process straight into the cgroup2 cgroup; an exec'd process joins
    the cgroup namespace and the v1 hierarchies (their ``tasks`` files) itself (an init, at
    its WaitGoStep)."""

    namespaces: tuple[tuple[str, int], ...]  # (/proc/PID/ns/NAME or a path, CLONE_NEW*), the cgroup one aside
    cgroupns: str = ""  # /proc/PID/ns/cgroup, or "" when the container shares ours
    root: str = ""  # /proc/PID/root
    cgroup2: str = ""  # the container's cgroup2 directory, or ""
    tasks: tuple[str, ...] = ()  # the tasks file of the container's cgroup in each v1 hierarchy
    init: bool = False  # the process is a container's init, cloned with Plan.clone_flags
    time_offsets: str = ""  # init: /proc/self/timens_offsets lines of a new time namespace


class Plan(NamedTuple):
    steps: tuple[Step, ...]
    clone_flags: int  # namespaces made by clone3
    rootfs: str
    join: Join | None = None  # exec, and an init that joins namespaces or offsets time


class CgroupMount(NamedTuple):
    """One hierarchy as the container's /sys/fs/cgroup shows it."""

    name: str  # directory under /sys/fs/cgroup
    host_path: str  # the container's cgroup on the host (bind source)
    fstype: str  # "cgroup" or "cgroup2"
    options: str  # v1 controllers, for a mount inside a cgroup namespace


def mount_options(options: Iterable[str]) -> tuple[int, int, str]:
    """Split OCI mount options into (mount flags, propagation flags, data string)."""
    flags = prop = 0
    data: list[str] = []
    for o in options:
        if o in MOUNT_FLAGS:
            clear, set_ = MOUNT_FLAGS[o]
            flags = (flags & ~clear) | set_
        elif o in PROPAGATION:
            prop |= PROPAGATION[o]
        elif o not in _IGNORED_OPTIONS:
            data.append(o)
    return flags, prop, ",".join(data)


def host_path(rootfs: str, path: str) -> str:
    """``path`` inside the container, as a host path under ``rootfs``."""
    return posixpath.join(rootfs, posixpath.normpath("/" + path).lstrip("/"))


def _is_bind(m: Mount) -> bool:
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


_CGROUP_TMPFS = "mode=755"  # marks the tmpfs under which the cgroup hierarchies are mounted


def _mount_steps(
    i: int, m: Mount, rootfs: str, bundle: str, cgroups: Sequence[CgroupMount], cgroupns: bool, rootless: bool
) -> list[Step]:
    target = host_path(rootfs, m.destination)
    flags, prop, data = mount_options(m.options)
    steps: list[Step] = []
    if m.type == "cgroup" and rootless and not cgroups:
        # no cgroup of its own (an unprivileged runtime): the host's tree, read-only
        steps.append(MountStep("/sys/fs/cgroup", target, "", "", MS_BIND | MS_REC, make=1))
        steps.append(MountStep("", target, "", "", MS_BIND | MS_REMOUNT | MS_REC | flags | MS_RDONLY))
    elif m.type == "cgroup":
        base = flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        steps.append(MountStep("tmpfs", target, "tmpfs", _CGROUP_TMPFS, base, make=1))
        for cg in cgroups:
            sub = posixpath.join(target, cg.name)
            if cgroupns:
                steps.append(MountStep(cg.fstype, sub, cg.fstype, cg.options, flags, make=1))
            else:
                steps.append(MountStep(cg.host_path, sub, "", "", MS_BIND | MS_REC, make=1))
                steps.append(MountStep("", sub, "", "", MS_BIND | MS_REMOUNT | flags))
        if flags & MS_RDONLY:
            steps.append(MountStep("", target, "", "", MS_REMOUNT | MS_RDONLY | base))
    elif _is_bind(m):
        source = m.source or ""
        if not posixpath.isabs(source):
            source = os.path.join(bundle, source)
        if not os.path.exists(source):
            raise ConfigError(f"mounts[{i}].source", f"bind source {source} does not exist")
        make = 1 if os.path.isdir(source) else 2
        # "type": "bind" alone means a bind mount too, as runc reads it
        steps.append(MountStep(source, target, "", "", MS_BIND | (flags & MS_REC), make=make))
        rest = flags & ~(MS_BIND | MS_REC)
        if rest:
            steps.append(MountStep("", target, "", "", MS_BIND | MS_REMOUNT | rest | (flags & MS_REC)))
    else:
        steps.append(MountStep(m.source or m.type or "none", target, m.type or "", data, flags, make=1))
    if prop:
        steps.append(MountStep("", target, "", "", prop))
    return steps


def _cap_mask(names: tuple[str, ...] | None) -> int:
    mask = 0
    for name in names or ():
        mask |= 1 << CAPABILITIES.index(name)
    return mask


def _capability_steps(caps: Capabilities) -> tuple[Step, Step]:
    return (
        BoundingStep(_cap_mask(caps.bounding)),
        CapsStep(_cap_mask(caps.effective), _cap_mask(caps.permitted), _cap_mask(caps.inheritable), _cap_mask(caps.ambient)),
    )


# sysctls each namespace makes the container's own (runc's list); anything else is the host's
_IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})
_UTS_SYSCTLS = frozenset({"kernel.domainname", "kernel.hostname"})


def _check_sysctl(key: str, linux: Linux) -> None:
    def own(kind: str) -> bool:  # as runc: one joined by path counts, unless it is the host's (ours)
        ns = linux.namespace(kind)
        return ns is not None and (ns.path is None or not is_ours_path(ns.path, kind))

    where = f'linux.sysctl["{key}"]'
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if not own("ipc"):
            raise ConfigError(where, "an ipc sysctl needs the container's own ipc namespace")
    elif key.startswith("net."):
        if not own("network"):
            raise ConfigError(where, "a net sysctl needs the container's own network namespace")
    elif key in _UTS_SYSCTLS:
        if not own("uts"):
            raise ConfigError(where, "a uts sysctl needs the container's own uts namespace")
    else:
        raise ConfigError(where, "not a namespaced sysctl: it would change the host for every process")


def _check_rlimit(i: int, name: str, hard: int) -> None:
    """Raising a hard limit needs CAP_SYS_RESOURCE: say so here, not as an EPERM from the init."""
    current = resource.getrlimit(RLIMITS[name])[1]
    if current != resource.RLIM_INFINITY and hard > current and not _has_capability(CAPABILITIES.index("CAP_SYS_RESOURCE")):
        raise ConfigError(
            f"process.rlimits[{i}].hard",
            f"{name} hard limit {hard} is above this runtime's own ({current}) and CAP_SYS_RESOURCE is missing",
        )


def _has_capability(cap: int) -> bool:
    with open("/proc/self/status") as f:
        eff = next(line for line in f if line.startswith("CapEff:"))
    return bool(int(eff.split()[1], 16) >> cap & 1)


PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}


def _persona(personality: Mapping[str, Any]) -> int:
    domain = personality.get("domain")
    if domain not in PERSONALITY_DOMAINS:
        raise ConfigError("linux.personality.domain", f"expected LINUX or LINUX32, got {domain!r}")
    if personality.get("flags"):
        raise ConfigError("linux.personality.flags", "personality flags are not supported (runc supports none either)")
    return PERSONALITY_DOMAINS[domain]


def _home(rootfs: str, uid: int) -> str:
    """HOME from the container's /etc/passwd, as runc sets it when the config does not."""
    try:
        with open(os.path.join(rootfs, "etc/passwd")) as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def _environ(env: Iterable[str], rootfs: str, uid: int) -> tuple[str, ...]:
    """The process's environment as runc makes it: a later NAME=value replaces an earlier one
    in its place, PATH and HOME (from the container's /etc/passwd) are added when missing."""
    merged: dict[str, str] = {}
    for e in env:
        merged[e.partition("=")[0]] = e
    merged.setdefault("PATH", DEFAULT_PATH)
    if "HOME" not in merged:
        merged["HOME"] = "HOME=" + _home(rootfs, uid)
    return tuple(merged.values())


def _scheduling_steps(proc: Process) -> list[Step]:
    steps: list[Step] = []
    if (s := proc.scheduler) is not None:
        flags = sum(SCHED_FLAGS[f] for f in set(s.flags))
        steps.append(SchedulerStep(SCHED_POLICIES[s.policy], flags, s.nice, s.priority, s.runtime, s.deadline, s.period))
    if (io := proc.io_priority) is not None:
        steps.append(IoPriorityStep(IOPRIO_CLASSES[io.class_] << IOPRIO_CLASS_SHIFT | io.priority))
    return steps


def process_steps(proc: Process, rootfs: str, linux: Linux, *, rootless: bool = False) -> list[Step]:
    """What makes the process itself, for an init and an exec alike: rlimits, scheduler and
    I/O priority, personality, no_new_privs, seccomp, bounding set, user and groups, capabilities, umask, cwd, argv, env."""
    for i, r in enumerate(proc.rlimits):
        _check_rlimit(i, r.type, r.hard)
    steps: list[Step] = [RlimitStep(r.type, r.soft, r.hard) for r in proc.rlimits]
    steps += _scheduling_steps(proc)
    if linux.personality is not None:
        steps.append(PersonalityStep(_persona(linux.personality)))
    if proc.no_new_privileges:
        steps.append(NoNewPrivsStep())
    if linux.seccomp is not None:
        from .seccomp import compile_profile

        bpf = compile_profile(linux.seccomp)
        steps.append(SeccompStep(bpf.program, bpf.flags, late=proc.no_new_privileges))
    user = proc.user
    for name, values in (("args", proc.args), ("env", proc.env)):
        if len(values) > MAX_STRINGS - 2:
            raise ConfigError(f"process.{name}", f"{len(values)} entries given, at most {MAX_STRINGS - 2} are supported")
    if len(user.additional_gids) > 64:
        raise ConfigError("process.user.additionalGids", f"{len(user.additional_gids)} groups given, at most 64 are supported")
    if rootless and user.additional_gids:
        raise ConfigError("process.user.additionalGids", "an unprivileged runtime's user namespace cannot set groups")
    as_user = UserStep(user.uid, user.gid, user.additional_gids, setgroups=not rootless)
    steps.append(ChdirStep(proc.cwd, before_user=True))
    if proc.capabilities is not None:
        bounding, caps = _capability_steps(proc.capabilities)
        steps += [bounding, KeepCapsStep(True), as_user, KeepCapsStep(False), caps]
    else:
        steps.append(as_user)
    steps.append(UmaskStep(user.umask if user.umask is not None else 0o022))
    steps.append(ChdirStep(proc.cwd))
    steps.append(ExecStep(proc.args, _environ(proc.env, rootfs, user.uid)))
    return steps


def terminal_step(proc: Process, *, console: bool = False) -> TerminalStep:
    size = proc.console_size
    return TerminalStep(size.height if size else 0, size.width if size else 0, proc.user.uid, console)


_PID = "\0pid\0"  # where the init writes its pid into a hook's state


def _hook_step(kind: str, i: int, hook: Hook, state: Mapping[str, Any], status: str, env: tuple[str, ...]) -> HookStep:
    """A createContainer or startContainer hook; without ``env`` of its own it gets the
    process's (as runc's init has it when it runs them)."""
    args = hook.args or (hook.path,)
    if len(args) + len(hook.env or env) > MAX_STRINGS - 4:
        raise ConfigError(f"hooks.{kind}[{i}]", f"at most {MAX_STRINGS - 4} args and env entries are supported")
    text = json.dumps({**state, "pid": _PID, "status": status}, separators=(",", ":"))
    head, _, tail = text.partition(json.dumps(_PID))
    start = kind == "startContainer"
    return HookStep(kind, hook.path, args, hook.env or env, hook.timeout or 0, head, tail, start)


def rootfs_of(spec: Spec, bundle: str) -> str:
    """The container's root directory on the host (``root.path``, relative to ``bundle``)."""
    if spec.root is None:
        raise ConfigError("root", "the config has no root: a container needs a root filesystem")
    return posixpath.normpath(os.path.join(bundle, spec.root.path))


def build(
    spec: Spec,
    *,
    bundle: str,
    cgroups: Sequence[CgroupMount] = (),
    no_pivot: bool = False,
    rootless: bool = False,
    session_keyring: str = "",
    hook_state: Mapping[str, Any] | None = None,
) -> Plan:
    """The init's steps for ``spec``; ``bundle`` anchors relative paths.

    ``rootless``: the runtime is not root; its user namespace denies setgroups, and
    without ``cgroups`` (none could be made) /sys/fs/cgroup shows the host's, read-only.
    ``session_keyring``: the name of a new session keyring to join ("" keeps the caller's).
    ``hook_state``: the OCI state document the in-container hooks get (pid and status are
    filled in), needed when the config has createContainer or startContainer hooks.
    """
    rootfs = rootfs_of(spec, bundle)
    assert spec.root is not None  # rootfs_of() checked
    if spec.process is None:
        raise ConfigError("process", "the config has no process: nothing to run")
    if not os.path.isdir(rootfs):
        raise ConfigError("root.path", f"rootfs {rootfs} does not exist or is not a directory")
    hooks = spec.hooks
    if len(hooks.start_container) > MAX_START_HOOKS:
        raise ConfigError("hooks.startContainer", f"at most {MAX_START_HOOKS} hooks are supported")
    env = _environ(spec.process.env, rootfs, spec.process.user.uid)
    state = hook_state or {}
    linux = spec.linux
    ns = init_namespaces(linux)
    clone_flags = ns.clone_flags
    if clone_flags & CLONE_NEWUSER and not (linux.uid_mappings and linux.gid_mappings):
        raise ConfigError("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings")

    steps: list[Step] = [WaitMapsStep()] if clone_flags & CLONE_NEWUSER else []
    if any(flag == CLONE_NEWUSER for _, flag in ns.joins):
        steps.append(WaitMapsStep(wait=False))
    if session_keyring:  # searchable by the container's processes (runc's permissions)
        search = KEY_OTH_SEARCH if clone_flags & CLONE_NEWUSER else KEY_USR_SEARCH
        steps.append(SessionKeyringStep(session_keyring, search))
    if spec.process.oom_score_adj is not None:  # the host's /proc: the init's own entry
        steps.append(WriteFileStep("/proc/self/oom_score_adj", str(spec.process.oom_score_adj)))
    # mounts made, root not yet switched: the parent's hooks, then the init's createContainer ones
    hook_steps: list[Step] = [HooksPointStep()] if hooks.prestart or hooks.create_runtime else []
    hook_steps += [_hook_step("createContainer", i, h, state, "creating", env) for i, h in enumerate(hooks.create_container)]
    if clone_flags & CLONE_NEWNS:
        steps += _filesystem_steps(spec, rootfs, bundle, cgroups, ns, hook_steps, no_pivot=no_pivot, rootless=rootless)
    else:
        steps += _chroot_steps(spec, rootfs, hook_steps)
    if spec.hostname is not None:
        steps.append(HostnameStep(spec.hostname))
    if spec.domainname is not None:
        steps.append(DomainnameStep(spec.domainname))
    if clone_flags & NAMESPACE_FLAGS["network"]:
        steps.append(LoopbackUpStep())

    process_steps_at = len(steps)  # from here the init's own settings: limits, seccomp, caps, user
    steps.extend(process_steps(spec.process, rootfs, linux, rootless=rootless))
    steps += [_hook_step("startContainer", i, h, state, "created", env) for i, h in enumerate(hooks.start_container)]
    # before the first cgroup mount or hook (they see the container's cgroups), else before
    # the init drops what joining and unsharing need
    go = min(
        (
            i for i, s in enumerate(steps[:process_steps_at])
            if isinstance(s, HooksPointStep | HookStep) or isinstance(s, MountStep) and s.fstype == "tmpfs" and s.data == _CGROUP_TMPFS
        ),
        default=process_steps_at,
    )
    v1 = tuple(posixpath.join(cg.host_path, "tasks") for cg in cgroups if cg.fstype == "cgroup")
    steps.insert(go, WaitGoStep(v1, ns.unshare_flags, ns.cgroupns))
    join = Join(ns.joins, init=True, time_offsets=ns.time_offsets) if ns.joins or ns.time_offsets else None
    return Plan(tuple(steps), clone_flags, rootfs, join)


def _sysctl_steps(linux: Linux) -> list[Step]:
    steps: list[Step] = []
    for key, value in linux.sysctl.items():
        _check_sysctl(key, linux)
        steps.append(WriteFileStep("/proc/sys/" + key.replace(".", "/"), value))
    return steps


def _chroot_steps(spec: Spec, rootfs: str, hook_steps: list[Step]) -> list[Step]:
    """Without a mount namespace of its own (crun's way, see ChrootStep): the sysctls through
    the host's /proc (each namespaced file shows the writer's namespace), a terminal from
    the devpts the init sees, the hooks, then the chroot. Whatever would change mounts is refused."""
    assert spec.root is not None and spec.process is not None
    for key, found in (("maskedPaths", spec.linux.masked_paths), ("readonlyPaths", spec.linux.readonly_paths)):
        if found:
            raise ConfigError(f"linux.{key}", f'{key} need a new mount namespace: add {{"type": "mount"}} to linux.namespaces')
    if spec.root.readonly:
        raise ConfigError("root.readonly", 'a read-only root needs a new mount namespace: add {"type": "mount"} to linux.namespaces')
    steps = _sysctl_steps(spec.linux)
    if spec.process.terminal:
        steps.append(terminal_step(spec.process))
    steps += hook_steps
    steps.append(ChrootStep(rootfs))
    return steps


def _filesystem_steps(
    spec: Spec, rootfs: str, bundle: str, cgroups: Sequence[CgroupMount], ns: InitNamespaces, hook_steps: list[Step],
    *, no_pivot: bool, rootless: bool,
) -> list[Step]:
    """In the container's new mount namespace: propagation, the rootfs bind, the mounts,
    /dev, the hooks, the pivot, then the sysctls, read-only and masked paths."""
    assert spec.root is not None and spec.process is not None
    linux = spec.linux
    root_prop = PROPAGATION.get(linux.rootfs_propagation or "", MS_SLAVE | MS_REC)
    steps: list[Step] = [
        # nothing the container mounts may propagate back to the host
        MountStep("", "/", "", "", root_prop if root_prop & (MS_SLAVE | MS_PRIVATE) else MS_SLAVE | MS_REC),
        MountStep(rootfs, rootfs, "", "", MS_BIND | MS_REC),
        RootfsStep(rootfs),
    ]
    for i, m in enumerate(spec.mounts):
        steps.extend(_mount_steps(i, m, rootfs, bundle, cgroups, bool(ns.unshare_flags & CLONE_NEWCGROUP), rootless))
    if not any(m.destination.rstrip("/") == "/dev" and _is_bind(m) for m in spec.mounts):
        steps += _dev_steps(linux, rootfs)
    steps += hook_steps
    steps.append(MoveRootStep(rootfs) if no_pivot else PivotRootStep(rootfs))
    if spec.process.terminal:  # after the pivot (the container's devpts), before anything read-only
        steps.append(terminal_step(spec.process, console=True))
    if root_prop & MS_SHARED or root_prop & MS_UNBINDABLE:
        steps.append(MountStep("", "/", "", "", root_prop))
    steps += _sysctl_steps(linux)  # before /proc/sys is made read-only
    steps.extend(ReadonlyStep(p) for p in linux.readonly_paths)
    steps.extend(MaskStep(p) for p in linux.masked_paths)
    if spec.root.readonly:
        steps.append(ReadonlyStep("/", bind=False))
    return steps


def _dev_steps(linux: Linux, rootfs: str) -> list[Step]:
    """/dev as runc makes it: the devices (bound from the host in a user namespace, where
    mknod is refused), the /proc/self/fd links, ptmx pointing into the devpts."""
    steps: list[Step] = []
    # the config's devices first: they win over a default one at the same path
    devices = [
        (d.path, DEVICE_TYPES[d.type] | (d.file_mode if d.file_mode is not None else 0o666),
         d.major, d.minor, d.uid or 0, d.gid or 0)
        for d in linux.devices
    ]
    devices += [(p, DEVICE_TYPES["c"] | 0o666, ma, mi, 0, 0) for p, ma, mi in DEFAULT_DEVICES]
    seen: set[str] = set()
    for path, mode, major, minor, uid, gid in devices:
        if path in seen:
            continue
        seen.add(path)
        target = host_path(rootfs, path)
        steps.append(MkdirStep(posixpath.dirname(target)))
        steps.append(UnlinkStep(target))
        if linux.namespace("user") is not None:  # no mknod in a user namespace: bind the host's node
            if not os.path.exists(path):
                raise ConfigError("linux.devices", f"{path} must exist on the host to be bound into a user namespace")
            steps.append(MountStep(path, target, "", "", MS_BIND, make=2))
        else:
            steps.append(MknodStep(target, mode, major, minor, uid, gid))
    for src, link in DEV_SYMLINKS:
        steps.append(SymlinkStep(src, host_path(rootfs, link)))
    if os.path.exists("/proc/kcore"):
        steps.append(SymlinkStep("/proc/kcore", host_path(rootfs, "/dev/core")))
    steps.append(UnlinkStep(host_path(rootfs, "/dev/ptmx")))
    steps.append(SymlinkStep("pts/ptmx", host_path(rootfs, "/dev/ptmx")))
    return steps


def build_exec(
    proc: Process,
    *,
    linux: Linux,
    rootfs: str,
    init_pid: int,
    cgroup1: Iterable[str],
    cgroup2: str,
    rootless: bool = False,
    session_keyring: str = "",
) -> Plan:
    """The steps of ``proc`` joining a running container: its init ``init_pid``, the
    namespaces its config (``linux``) lists (one it does not list is the host's, which the
    caller already has), its root, its cgroups (directories in the v1 hierarchies, and the
    cgroup2 one or "") and its seccomp profile; it joins the init's session keyring
    ``session_keyring`` ("" keeps the caller's)."""
    types = {ns.type for ns in linux.namespaces}
    proc_ns = f"/proc/{init_pid}/ns"
    join = Join(
        tuple((f"{proc_ns}/{name}", flag) for t, (name, flag) in JOIN_ORDER.items() if t in types and t != "cgroup"),
        f"{proc_ns}/cgroup" if "cgroup" in types else "",
        f"/proc/{init_pid}/root",
        cgroup2,
        tuple(posixpath.join(d, "tasks") for d in cgroup1),
    )
    steps: list[Step] = [SessionKeyringStep(session_keyring)] if session_keyring else []
    if proc.terminal:
        steps.append(terminal_step(proc))
    steps += process_steps(proc, rootfs, linux, rootless=rootless)
    return Plan(tuple(steps), 0, rootfs, join)


_U64 = (1 << 64) - 1


def encode(plan: Plan, codes: Mapping[str, int], last_cap: int) -> bytes:
    """The wire form read by _clone.c: per step ``u32 op, u32 nint, u32 nstr``, int64s, C strings."""
    out = bytearray()

    def rec(op: str, ints: list[int], strs: Iterable[str] = ()) -> None:
        s = [x.encode() for x in strs]
        if any(b"\0" in x for x in s):
            raise ConfigError("", f"a string for {op} contains a NUL byte")
        # unsigned: RLIM_INFINITY is 2**64-1; the C side reads the same 64 bits
        out.extend(struct.pack(f"=III{len(ints)}Q", codes[op], len(ints), len(s), *(i & _U64 for i in ints)))
        for x in s:
            out.extend(x + b"\0")

    for step in plan.steps:
        match step:
            case MountStep():
                rec("MOUNT", [step.flags, step.make], [step.source, step.target, step.fstype, step.data])
            case MkdirStep():
                rec("MKDIR", [step.mode], [step.path])
            case MknodStep():
                rec("MKNOD", [step.mode, step.major, step.minor, step.uid, step.gid], [step.path])
            case SymlinkStep():
                rec("SYMLINK", [], [step.target, step.link])
            case UnlinkStep():
                rec("UNLINK", [], [step.path])
            case RootfsStep():
                rec("ROOTFS", [], [step.rootfs])
            case PivotRootStep():
                rec("PIVOT_ROOT", [], [step.rootfs])
            case MoveRootStep():
                rec("MOVE_ROOT", [], [step.rootfs])
            case MaskStep():
                rec("MASK", [], [step.path])
            case ChrootStep():
                rec("CHROOT", [], [step.rootfs])
            case IoPriorityStep():
                rec("IOPRIO", [step.value])
            case SchedulerStep():
                rec("SCHED", [step.policy, step.flags, step.nice, step.priority, step.runtime, step.deadline, step.period])
            case ReadonlyStep():
                rec("READONLY", [int(step.bind)], [step.path])
            case HostnameStep():
                rec("HOSTNAME", [], [step.name])
            case DomainnameStep():
                rec("DOMAINNAME", [], [step.name])
            case LoopbackUpStep():
                rec("LOOPBACK_UP", [])
            case RlimitStep():
                rec("RLIMIT", [RLIMITS[step.name], step.hard, step.soft], [step.name])
            case KeepCapsStep():
                rec("KEEPCAPS", [int(step.on)])
            case UserStep():
                rec("USER", [step.uid, step.gid, int(step.setgroups), *step.additional_gids])
            case BoundingStep():
                rec("CAPS_BOUNDING", [last_cap, step.keep])
            case CapsStep():
                rec("CAPS", [last_cap, step.effective, step.permitted, step.inheritable, step.ambient])
            case NoNewPrivsStep():
                rec("NO_NEW_PRIVS", [])
            case UmaskStep():
                rec("UMASK", [step.mask])
            case ChdirStep():
                rec("CHDIR", [int(step.before_user)], [step.path])
            case WriteFileStep():
                rec("WRITE_FILE", [], [step.path, step.content])
            case PersonalityStep():
                rec("PERSONALITY", [step.persona])
            case SeccompStep():
                rec("SECCOMP", [step.flags, int(step.late)], [step.program.hex()])
            case WaitMapsStep():
                rec("WAIT_MAPS", [int(step.wait)])
            case WaitGoStep():
                rec("WAIT_GO", [step.unshare, int(bool(step.cgroupns))], step.join)
            case TerminalStep():
                rec("TERMINAL", [step.rows, step.cols, step.uid, int(step.console)])
            case SessionKeyringStep():
                rec("SESSION_KEYRING", [step.search], [step.name])
            case HooksPointStep():
                rec("HOOKS_POINT", [])
            case HookStep():
                rec(
                    "HOOK", [int(step.after_start), step.timeout, len(step.args)],
                    [step.kind, step.path, step.state_head, step.state_tail, *step.args, *step.env],
                )
            case ExecStep():
                rec("ARGV", [], step.args)
                rec("ENV", [], step.env)
    return bytes(out)


def last_cap() -> int:
    """The highest capability this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1
