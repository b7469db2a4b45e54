"""cffi (API mode) build of aioruntime._native from _clone.c; run by setuptools."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent

ffibuilder = FFI()
# The header is the one declaration of the C interface: cffi reads it without the
# preprocessor lines (cffi takes only constant #defines, and strips the comments itself).
ffibuilder.cdef(
    "\n".join(
        line
        for line in (HERE / "_clone.h").read_text().splitlines()
        if not line.startswith("#") or line.startswith("#define AIO_")
    )
)
ffibuilder.set_source(
    "aioruntime._native",
    '#include "_clone.h"',
    sources=["aioruntime/_clone.c"],  # relative to the project root, as setuptools wants
    include_dirs=["aioruntime"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

