"""cffi (API mode) build of aioruntime._native from _clone.c and _bpf.c; run by setuptools."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent


def _declarations(header: str) -> str:
    """A header as cffi reads it: no preprocessor lines but the constant #defines (cffi strips
    the comments itself; include guards have no value). The headers are the one declaration
    of the C interface."""
    return "\n".join(
        line
        for line in (HERE / header).read_text().splitlines()
        if not line.startswith("#") or (line.startswith("#define AIO_") and len(line.split()) >= 3)
    )


ffibuilder = FFI()
ffibuilder.cdef(
    _declarations("_clone.h")
    + _declarations("_bpf.h")
    # inotify, for the cgroup and state-dir watches
    + """
int inotify_init1(int flags);
int inotify_add_watch(int fd, const char *pathname, uint32_t mask);
"""
)
ffibuilder.set_source(
    "aioruntime._native",
    '#include <sys/inotify.h>\n#include "_clone.h"\n#include "_bpf.h"',
    sources=["aioruntime/_clone.c", "aioruntime/_bpf.c"],  # relative to the project root, as setuptools wants
    include_dirs=["aioruntime"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)
