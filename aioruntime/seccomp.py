"""The OCI ``linux.seccomp`` profile, compiled to a BPF program with libseccomp.

Compiled here, in the parent, where errors can name the JSON path; the init only loads
the bytes (``SeccompStep``). Syscall names this libseccomp does not know are skipped, as
runc skips them, so a profile written for a newer kernel still loads.
"""


import errno as errnos
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .errors import ConfigError

ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_TAKES_ERRNO = {"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"}
OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}
_U64 = (1 << 64) - 1


class Filter(NamedTuple):
    program: bytes  # struct sock_filter[], 8 bytes per instruction
    flags: int  # for seccomp(SECCOMP_SET_MODE_FILTER, flags, ...)


def _action(name: Any, errno_ret: Any, path: str, default_errno: int = errnos.EPERM) -> int:
    if name not in ACTIONS:
        if name == "SCMP_ACT_NOTIFY":
            raise ConfigError(path, "SCMP_ACT_NOTIFY needs a seccomp listener, which aioruntime does not support yet")
        raise ConfigError(path, f"unknown seccomp action {name!r}; expected one of {', '.join(ACTIONS)}")
    code = ACTIONS[name]
    if name in _TAKES_ERRNO:
        value = default_errno if errno_ret is None else errno_ret
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
            raise ConfigError(path.rsplit(".", 1)[0] + ".errnoRet", f"expected an errno number 0-65535, got {value!r}")
        code |= value
    return code


def _list(value: Any, path: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list, got {value!r}")
    return value


def compile_profile(profile: Mapping[str, Any], path: str = "linux.seccomp") -> Filter:
    """BPF for ``profile``; ConfigError naming the JSON path for anything invalid."""
    from ._seccomp import ffi, lib

    if "defaultAction" not in profile:
        raise ConfigError(f"{path}.defaultAction", "a seccomp profile needs a defaultAction")
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"), f"{path}.defaultAction")
    flags = 0
    for i, name in enumerate(_list(profile.get("flags"), f"{path}.flags")):
        if name not in FLAGS:
            raise ConfigError(f"{path}.flags[{i}]", f"unknown seccomp flag {name!r}; expected one of {', '.join(FLAGS)}")
        flags |= FLAGS[name]
    ctx = lib.seccomp_init(default)
    if ctx == ffi.NULL:
        raise ConfigError(f"{path}.defaultAction", "libseccomp refused the default action")
    try:
        for i, arch in enumerate(_list(profile.get("architectures"), f"{path}.architectures")):
            token = lib.seccomp_arch_resolve_name(str(arch).removeprefix("SCMP_ARCH_").lower().encode())
            if not token:
                raise ConfigError(f"{path}.architectures[{i}]", f"unknown architecture {arch!r}")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -errnos.EEXIST:
                raise ConfigError(f"{path}.architectures[{i}]", f"cannot add {arch}: {os.strerror(-rc)}")
        for i, rule in enumerate(_list(profile.get("syscalls"), f"{path}.syscalls")):
            _add_rule(ctx, rule, default, f"{path}.syscalls[{i}]", ffi, lib)
        with os.fdopen(os.memfd_create("seccomp", os.MFD_CLOEXEC), "w+b") as f:
            rc = lib.seccomp_export_bpf(ctx, f.fileno())
            if rc < 0:
                raise ConfigError(path, f"libseccomp cannot export the filter: {os.strerror(-rc)}")
            f.seek(0)
            program = f.read()
    finally:
        lib.seccomp_release(ctx)
    return Filter(program, flags)


def _add_rule(ctx: Any, rule: Any, default: int, path: str, ffi: Any, lib: Any) -> None:
    if not isinstance(rule, Mapping):
        raise ConfigError(path, f"expected an object, got {rule!r}")
    action = _action(rule.get("action"), rule.get("errnoRet"), f"{path}.action")
    args = _list(rule.get("args"), f"{path}.args")
    comparisons = []
    for j, arg in enumerate(args):
        where = f"{path}.args[{j}]"
        if not isinstance(arg, Mapping):
            raise ConfigError(where, f"expected an object, got {arg!r}")
        index, op = arg.get("index"), arg.get("op")
        if not isinstance(index, int) or not 0 <= index <= 5:
            raise ConfigError(f"{where}.index", f"expected a syscall argument index 0-5, got {index!r}")
        if op not in OPERATORS:
            raise ConfigError(f"{where}.op", f"unknown comparison {op!r}; expected one of {', '.join(OPERATORS)}")
        values = [arg.get("value", 0), arg.get("valueTwo", 0)]
        for key, v in zip(("value", "valueTwo"), values):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _U64:
                raise ConfigError(f"{where}.{key}", f"expected an unsigned 64-bit integer, got {v!r}")
        comparisons.append((index, OPERATORS[op], values[0], values[1]))
    if action == default:
        return  # libseccomp refuses a rule that repeats the default; it would change nothing
    # libseccomp allows one comparison per argument in a rule: several on the same argument
    # become one rule each (as runc does), all others go into a single rule
    indexes = [c[0] for c in comparisons]
    groups = [[c] for c in comparisons] if len(set(indexes)) < len(indexes) else [comparisons]
    for k, name in enumerate(_list(rule.get("names"), f"{path}.names")):
        nr = lib.seccomp_syscall_resolve_name(str(name).encode())
        if nr < 0:
            continue  # unknown to this libseccomp: skipped, as runc does
        for group in groups:
            array = ffi.new("struct scmp_arg_cmp[]", [{"arg": a, "op": o, "datum_a": x, "datum_b": y} for a, o, x, y in group])
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(group), array)
            if rc < 0:
                raise ConfigError(f"{path}.names[{k}]", f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")
