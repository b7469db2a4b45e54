"""cffi (API mode) build of aioruntime._native from _clone.c; run by setuptools."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent

ffibuilder = FFI()
ffibuilder.cdef(
    "\n".join(
        line
        for line in (HERE / "_clone.h").read_text().splitlines()
        if line.startswith("#define AIO_")
    )
    + """
struct aio_spawn_args {
    const char *plan;
    size_t plan_len;
    uint64_t clone_flags;
    int stdio[3];
    int sync_fd;
    int state_dir_fd;
    int preserve_fds;
    int wait_fifo;
};
struct aio_error {
    int32_t kind;
    int32_t err;
    char step[32];
    char path[4096];
};
int aio_spawn(const struct aio_spawn_args *args, int *pidfd_out);
int aio_sync_pair(int fds[2]);
int aio_send_go(int sock, const int *fds, int n);
"""
)
ffibuilder.set_source(
    "aioruntime._native",
    '#include "_clone.h"',
    sources=["aioruntime/_clone.c"],  # relative to the project root, as setuptools wants
    include_dirs=["aioruntime"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

