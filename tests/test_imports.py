"""The CLI's start-up rule: NamedTuple fields carry real annotations, not strings.

A string annotation makes NamedTuple ``compile()`` a ForwardRef, and the first ``compile()``
in a process costs about a millisecond (see the README's benchmark notes).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import ForwardRef

import aioruntime

SKIP = {"aioruntime._build", "aioruntime._seccomp_build", "aioruntime.__main__", "aioruntime.cli.__main__"}


def test_namedtuple_annotations_are_evaluated() -> None:
    postponed = []
    for info in pkgutil.walk_packages(aioruntime.__path__, "aioruntime."):
        if info.name in SKIP:
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, tuple) and value.__module__ == info.name:
                if any(isinstance(a, (str, ForwardRef)) for a in getattr(value, "__annotations__", {}).values()):
                    postponed.append(f"{info.name}.{name}")
    assert postponed == []
