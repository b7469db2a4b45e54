"""What this runtime implements, as the OCI features document (runtime-spec ``features.md``;
``runc features`` prints the same shape): container managers read it to decide which
config fields they may send.

The lists come from the tables the code applies a config with (mount options, capability
and namespace names, seccomp actions), so they cannot claim more than is implemented; the
seccomp architectures are the ones the linked libseccomp resolves.
"""

from __future__ import annotations

from typing import Any

from .seccomp import ACTIONS, FLAGS, OPERATORS

OCI_VERSION_MIN = "1.0.0"

# every architecture the runtime-spec names; libseccomp says which of them it knows
_SECCOMP_ARCHS = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(w.capitalize() for w in rest)


def seccomp_archs() -> list[str]:
    """The runtime-spec architecture names the linked libseccomp resolves (as compile_profile does)."""
    from ._seccomp import lib

    return [a for a in _SECCOMP_ARCHS if lib.seccomp_arch_resolve_name(a.removeprefix("SCMP_ARCH_").lower().encode())]


def libseccomp_version() -> str:
    from ._seccomp import lib

    v = lib.seccomp_version()
    return f"{v.major}.{v.minor}.{v.micro}"


def features() -> dict[str, Any]:
    """The features document, keys in runc's order."""
    from .ops.lifecycle import OCI_VERSION
    from .plan import MOUNT_FLAGS, PROPAGATION
    from .spec.model import Hooks
    from .spec.names import CAPABILITIES, NAMESPACE_TYPES

    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION,
        "hooks": [_camel(h) for h in Hooks._fields],
        "mountOptions": sorted({*MOUNT_FLAGS, *PROPAGATION}),
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": True},
            "seccomp": {
                "enabled": True,
                "actions": sorted(ACTIONS),
                "operators": sorted(OPERATORS),
                "archs": seccomp_archs(),
                "knownFlags": list(FLAGS),
                "supportedFlags": list(FLAGS),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {
            "io.github.seccomp.libseccomp.version": libseccomp_version(),
            "org.opencontainers.runc.checkpoint.enabled": "true",
        },
    }
