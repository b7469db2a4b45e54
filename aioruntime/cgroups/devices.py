"""Device access rules: what the container may mknod, read and write.

The OCI rules are read with cgroup v1's semantics, which they were written for: a default
(allow or deny everything) and exceptions, each rule in turn switching the default (type
"a") or adding or removing an exception. ``emulate`` computes where a list of rules ends
up; from that one state come the v1 writes (``transition``: only the differences, so a
live update never denies what both old and new rules allow) and the cgroup2 BPF program
(``program``), which v2 requires instead of files.
"""


import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from ..spec.resources import DeviceRule

Key = tuple[str, int | None, int | None]  # type "c"/"b", major, minor (None: any)


class DeviceState(NamedTuple):
    """A device cgroup: its default and its exceptions, each with its access letters."""

    default_allow: bool
    exceptions: dict[Key, frozenset[str]]


OPEN = DeviceState(True, {})
"""A new cgroup below an unrestricted parent."""


def _rule(type_: str, major: int | None, minor: int | None, access: str) -> DeviceRule:
    return DeviceRule(allow=True, type=type_, major=major, minor=minor, access=access)


DEFAULT_ALLOWED: tuple[tuple[str | None, DeviceRule], ...] = (
    (None, _rule("c", None, None, "m")),  # mknod of any device; opening it is another matter
    (None, _rule("b", None, None, "m")),
    ("/dev/null", _rule("c", 1, 3, "rwm")),
    ("/dev/random", _rule("c", 1, 8, "rwm")),
    ("/dev/full", _rule("c", 1, 7, "rwm")),
    ("/dev/tty", _rule("c", 5, 0, "rwm")),
    ("/dev/zero", _rule("c", 1, 5, "rwm")),
    ("/dev/urandom", _rule("c", 1, 9, "rwm")),
    (None, _rule("c", 136, None, "rwm")),  # /dev/pts/*
    (None, _rule("c", 5, 2, "rwm")),  # /dev/ptmx
    (None, _rule("c", 10, 200, "rwm")),  # /dev/net/tun
)
"""runc's defaults, appended after the config's rules; one whose path the config's
``linux.devices`` lists is left out (the config's device takes its place)."""


def effective_rules(rules: Sequence[DeviceRule] | None, device_paths: Iterable[str]) -> list[DeviceRule]:
    """The config's rules followed by the default ones, as runc builds them."""
    listed = set(device_paths)
    return list(rules or ()) + [r for path, r in DEFAULT_ALLOWED if path is None or path not in listed]


def emulate(rules: Iterable[DeviceRule], start: DeviceState = OPEN) -> DeviceState:
    """Where writing ``rules`` in turn to devices.allow/deny leaves a cgroup (the kernel's
    devcgroup_update_access): "a" resets; a rule agreeing with the default removes access
    from the matching exception, one disagreeing adds it."""
    default, exceptions = start.default_allow, dict(start.exceptions)
    for r in rules:
        if r.type == "a":
            default, exceptions = r.allow, {}
            continue
        key = (r.type, r.major, r.minor)
        have = exceptions.get(key, frozenset())
        now = have - set(r.access) if r.allow == default else have | set(r.access)
        if now:
            exceptions[key] = frozenset(now)
        else:
            exceptions.pop(key, None)
    return DeviceState(default, exceptions)


def _line(key: Key, access: Iterable[str]) -> str:
    t, major, minor = key
    return f"{t} {'*' if major is None else major}:{'*' if minor is None else minor} {''.join(sorted(access, key='rwm'.index))}"


def transition(old: DeviceState, new: DeviceState) -> list[tuple[str, str]]:
    """(file, line) writes taking a v1 devices cgroup from ``old`` to ``new``.

    With the same default only the differing exceptions are written, additions first, so
    nothing both states allow is denied on the way. A new default needs the "a" reset,
    which clears every exception: the new ones follow it.
    """
    add = "devices.deny" if new.default_allow else "devices.allow"
    remove = "devices.allow" if new.default_allow else "devices.deny"
    if old.default_allow != new.default_allow:
        return [(remove, "a")] + [(add, _line(k, a)) for k, a in new.exceptions.items()]
    out = []
    for k, a in new.exceptions.items():
        if a - old.exceptions.get(k, frozenset()):
            out.append((add, _line(k, a - old.exceptions.get(k, frozenset()))))
    for k, a in old.exceptions.items():
        if a - new.exceptions.get(k, frozenset()):
            out.append((remove, _line(k, a - new.exceptions.get(k, frozenset()))))
    return out


# -- cgroup2: a BPF_PROG_TYPE_CGROUP_DEVICE program ----------------------------------------------
#
# The program gets struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }:
# access_type is (access << 16) | type, type BPF_DEVCG_DEV_BLOCK 1 or _CHAR 2, access
# BPF_DEVCG_ACC_MKNOD 1, _READ 2, _WRITE 4. It returns 1 to allow, 0 to deny.

_TYPE = {"b": 1, "c": 2}
_ACCESS = {"m": 1, "r": 2, "w": 4}
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_AND_K = 0x57  # BPF_ALU64 | BPF_AND | BPF_K
_RSH_K = 0x77  # BPF_ALU64 | BPF_RSH | BPF_K
_MOV_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_MOV_X = 0xBF  # BPF_ALU64 | BPF_MOV | BPF_X
_JNE32_K = 0x56  # BPF_JMP32 | BPF_JNE | BPF_K: 32-bit compare, device numbers are u32
_JEQ32_K = 0x16
_EXIT = 0x95


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    if imm >= 2**31:
        imm -= 2**32  # the immediate is s32; a 32-bit compare sees the same bits
    return struct.pack("<BBhi", op, dst | (src << 4), off, imm)


def _mask(access: Iterable[str]) -> int:
    return sum(_ACCESS[a] for a in set(access))


def program(state: DeviceState) -> bytes:
    """The eBPF instructions deciding as the v1 cgroup in ``state`` would (devcgroup's
    match_exception): with a deny default an exception allows when it covers every
    requested access; with an allow default it denies when it shares any."""
    code = [
        _insn(_LDX_W, 2, 1, 0),  # r2 = access_type
        _insn(_AND_K, 2, imm=0xFFFF),  # r2 = type
        _insn(_LDX_W, 3, 1, 0),
        _insn(_RSH_K, 3, imm=16),  # r3 = access
        _insn(_LDX_W, 4, 1, 4),  # r4 = major
        _insn(_LDX_W, 5, 1, 8),  # r5 = minor
    ]
    verdict = 0 if state.default_allow else 1
    for (t, major, minor), access in state.exceptions.items():
        tests = [(2, _TYPE[t])] + [(r, n) for r, n in ((4, major), (5, minor)) if n is not None]
        mask = _mask(access)
        body = [
            _insn(_MOV_X, 1, 3),  # r1 = access
            # deny default: skip unless access & ~mask == 0; allow default: skip unless access & mask
            _insn(_AND_K, 1, imm=(~mask & 7) if verdict else mask),
            _insn(_JNE32_K if verdict else _JEQ32_K, 1, off=2, imm=0),
            _insn(_MOV_K, 0, imm=verdict),
            _insn(_EXIT),
        ]
        for i, (reg, value) in enumerate(tests):
            code.append(_insn(_JNE32_K, reg, off=len(tests) - 1 - i + len(body), imm=value))
        code += body
    code += [_insn(_MOV_K, 0, imm=1 - verdict), _insn(_EXIT)]
    return b"".join(code)


__all__ = ["DEFAULT_ALLOWED", "OPEN", "DeviceState", "effective_rules", "emulate", "program", "transition"]
