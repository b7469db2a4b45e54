"""cffi (API mode) build of aioruntime._native from _clone.c and _bpf.c; run by setuptools."""

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
    # cgroup2 device programs (_bpf.c) and inotify, for the cgroup and state-dir watches
    + """
int aio_bpf_devices_attach(int cgroup_fd, const void *insns, unsigned int insn_cnt, char *log, unsigned int log_size);
int aio_bpf_devices_detach(int cgroup_fd);
int aio_bpf_devices_count(int cgroup_fd);
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

