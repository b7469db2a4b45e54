#!/usr/bin/env python3
"""Build a busybox-static root filesystem, and OCI bundles around it.

The one rootfs builder of the project: setup.sh's demo, the tests, the examples and the
benchmark all use it.  As a script::

    busybox_rootfs.py ROOTFS                      # build (or refresh) ROOTFS, print its path
    busybox_rootfs.py ROOTFS --bundle DIR -- ARGS  # and write DIR/config.json running ARGS
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BUSYBOX = Path(os.environ.get("AIORUNTIME_BUSYBOX", "/bin/busybox"))
"""Debian's busybox-static installs a static binary here; it needs nothing else in the rootfs."""

_FORMAT = 1  # bump when the layout below changes, so old rootfs dirs are refreshed
_STAMP = ".busybox-rootfs"

_DIRS = {
    "bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
    "proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777, "etc": 0o755,
    "root": 0o700, "home/user": 0o755, "run": 0o755, "var": 0o755, "var/tmp": 0o1777,
}
_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    "etc/group": "root:x:0:\ntty:x:5:\nuser:x:1000:\n",
    "etc/hostname": "busybox\n",
}


def _check_static(binary: Path) -> None:
    """Refuse a dynamically linked busybox: it could not start in a rootfs without libc."""
    with binary.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return  # not a little-endian ELF64: leave the judgement to the kernel
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        if struct.unpack_from("<I", table, i * phentsize)[0] == 3:  # PT_INTERP
            raise RuntimeError(
                f"{binary} is dynamically linked; install Debian's busybox-static "
                "(apt-get install busybox-static) or set AIORUNTIME_BUSYBOX to a static busybox"
            )


def build_rootfs(dest: str | os.PathLike[str]) -> Path:
    """Make ``dest`` a busybox rootfs and return its absolute path.

    Idempotent: a rootfs already built from the same busybox is returned untouched.
    """
    root = Path(dest).absolute()
    st = BUSYBOX.stat()
    stamp = f"{_FORMAT} {BUSYBOX} {st.st_size} {st.st_mtime_ns}\n"
    try:
        if (root / _STAMP).read_text() == stamp:
            return root
    except OSError:
        pass
    _check_static(BUSYBOX)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # a non-root container user must reach /bin (a tmp dir is 0700)
    for rel, mode in _DIRS.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(root / rel, mode)
    os.chown(root / "home/user", 1000, 1000)
    tmp = root / "bin/.busybox.tmp"
    shutil.copyfile(BUSYBOX, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, root / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for name in applets:
        link = root / "bin" / name
        if name == "busybox" or (link.is_symlink() and os.readlink(link) == "busybox"):
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("busybox")
    for rel, text in _FILES.items():
        (root / rel).write_text(text)
    (root / _STAMP).write_text(stamp)
    return root


def merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overrides`` into ``base`` in place: mappings merge key by key, other values
    replace, and ``None`` removes the key. Returns ``base``."""
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def make_bundle(
    directory: str | os.PathLike[str],
    rootfs: str | os.PathLike[str],
    args: Sequence[str],
    *,
    cgroups_path: str | None = None,
    **overrides: Any,
) -> Path:
    """Write ``directory/config.json``: aioruntime's default spec (runc's) running ``args``
    without a terminal in ``rootfs``, with ``linux.cgroupsPath`` and ``overrides`` (see
    :func:`merge`) applied. Returns the bundle directory."""
    from aioruntime.spec import default_spec

    spec: dict[str, Any] = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    spec["root"]["path"] = str(Path(rootfs).absolute())
    if cgroups_path is not None:
        spec.setdefault("linux", {})["cgroupsPath"] = cgroups_path
    merge(spec, overrides)
    bundle = Path(directory).absolute()
    bundle.mkdir(parents=True, exist_ok=True)
    tmp = bundle / ".config.json.tmp"
    tmp.write_text(json.dumps(spec, indent="\t") + "\n")
    os.replace(tmp, bundle / "config.json")
    return bundle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a busybox-static rootfs (and a bundle around it).")
    parser.add_argument("rootfs", type=Path, help="directory to build the rootfs in")
    parser.add_argument("--bundle", type=Path, help="also write a bundle's config.json here")
    parser.add_argument("args", nargs="*", default=["sh"], help="the process of the bundle")
    ns = parser.parse_intermixed_args(argv)
    rootfs = build_rootfs(ns.rootfs)
    print(make_bundle(ns.bundle, rootfs, ns.args) if ns.bundle else rootfs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
