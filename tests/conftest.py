"""Fixtures: a busybox rootfs, bundles around it, a private state root and cgroup parent.

Every cgroup a test makes goes under one uniquely named parent, removed (and only it)
at the end of the session; every container must be deleted by its test, which the
``state_root`` fixture checks.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import EllipsisType
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import AIORUNTIME, BundleFactory, mounts_under  # noqa: E402

from tools.busybox_rootfs import build_rootfs, make_bundle  # noqa: E402
from tools.cgroup_tree import remove_tree  # noqa: E402


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A busybox-static rootfs, built once per session and removed at its end."""
    top = tmp_path_factory.mktemp("rootfs")
    yield build_rootfs(top)
    if left := mounts_under(top):
        warnings.warn(f"not removing {top}: still mounted there: {left}")
    else:
        shutil.rmtree(top)


@pytest.fixture(scope="session")
def cgroup_parent() -> Iterator[str]:
    """The name of the session's cgroup parent; its tree is removed from every hierarchy
    at the end (processes still in it are killed)."""
    name = f"aioruntime-test-{os.getpid()}-{secrets.token_hex(4)}"
    yield name
    if left := remove_tree(name):
        pytest.fail("cgroups the tests could not remove:\n  " + "\n  ".join(left), pytrace=False)


@pytest.fixture
def cid() -> str:
    """A container id unique to this test."""
    return f"t-{secrets.token_hex(6)}"


@pytest.fixture
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh runtime root (``--root``/``root=``). The test must delete its containers:
    any left are force-deleted through the CLI and the test fails."""
    root = tmp_path_factory.mktemp("state")
    yield root
    left = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if left:
        for name in left:
            try:
                subprocess.run([AIORUNTIME, "--root", str(root), "delete", "-f", name],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                warnings.warn(f"could not force-delete {name}: {e}")
        pytest.fail(f"the test left containers in its state root {root}: {left}", pytrace=False)


@pytest.fixture
def bundle(tmp_path: Path, rootfs: Path, cgroup_parent: str, cid: str) -> BundleFactory:
    """``bundle(args, **overrides) -> Path``: a bundle in tmp_path running ``args`` in the
    session's rootfs, in cgroup ``/<cgroup_parent>/<cid>`` (``-2``, ``-3``... for further
    bundles of the same test) unless ``cgroups_path`` says otherwise (None: leave unset)."""
    counter = itertools.count(1)

    def make(args: list[str], *, cgroups_path: str | None | EllipsisType = ..., **overrides: Any) -> Path:
        n = next(counter)
        suffix = "" if n == 1 else f"-{n}"
        if cgroups_path is ...:
            cgroups_path = f"/{cgroup_parent}/{cid}{suffix}"
        return make_bundle(tmp_path / f"bundle{suffix}", rootfs, args, cgroups_path=cgroups_path, **overrides)

    return make
