/* The C interface of aioruntime._native: _clone.c implements it, and _build.py hands it
 * to cffi as is (minus the preprocessor lines other than AIO_ constants). */
#ifndef AIORUNTIME_CLONE_H
#define AIORUNTIME_CLONE_H
#include <stddef.h>
#include <stdint.h>

/* Plan records, in the order Python emits them. */
#define AIO_OP_MOUNT 1
#define AIO_OP_MKDIR 2
#define AIO_OP_MKNOD 3
#define AIO_OP_SYMLINK 4
#define AIO_OP_UNLINK 5
#define AIO_OP_PIVOT_ROOT 6
#define AIO_OP_MOVE_ROOT 7
#define AIO_OP_MASK 8
#define AIO_OP_READONLY 9
#define AIO_OP_HOSTNAME 10
#define AIO_OP_DOMAINNAME 11
#define AIO_OP_RLIMIT 12
#define AIO_OP_KEEPCAPS 13
#define AIO_OP_USER 14
#define AIO_OP_CAPS 15
#define AIO_OP_NO_NEW_PRIVS 16
#define AIO_OP_UMASK 17
#define AIO_OP_CHDIR 18
#define AIO_OP_ARGV 19
#define AIO_OP_ENV 20
#define AIO_OP_CAPS_BOUNDING 21
#define AIO_OP_WAIT_GO 22
#define AIO_OP_ROOTFS 23
#define AIO_OP_WRITE_FILE 24
#define AIO_OP_PERSONALITY 25
#define AIO_OP_SECCOMP 26
#define AIO_OP_WAIT_MAPS 27
#define AIO_OP_LOOPBACK_UP 28
#define AIO_OP_TERMINAL 29
#define AIO_OP_SESSION_KEYRING 30
#define AIO_OP_HOOKS_POINT 31 /* prestart/createRuntime: report 'H', wait for 'C' */
#define AIO_OP_HOOK 32        /* createContainer now, startContainer after the exec fifo */
#define AIO_OP_CHROOT 33
#define AIO_OP_IOPRIO 34
#define AIO_OP_SCHED 35

#define AIO_MAX_INTS 80
#define AIO_MAX_STRS 4096
#define AIO_MAX_JOIN 16 /* v1 tasks fds sent with the go: one per hierarchy */
#define AIO_EXIT_SETUP_FAILED 125
#define AIO_MAX_HOOKS 64 /* startContainer hooks, kept for after the exec fifo */

struct aio_spawn_args {
    const char *plan;
    size_t plan_len;
    uint64_t clone_flags;   /* CLONE_NEW* given to clone3 */
    int stdio[3];           /* fd to become 0, 1, 2; -1 keeps the caller's */
    int sync_fd;            /* child's end of the SOCK_SEQPACKET socketpair */
    int state_dir_fd;       /* O_PATH directory holding exec.fifo */
    int preserve_fds;       /* fds 3 .. 3+n-1 pass through to the process */
    int wait_fifo;          /* block on exec.fifo before execve (create), or not (exec) */
    int cgroup2_fd;         /* create: the cgroup2 directory to clone into (CLONE_INTO_CGROUP), or -1 */
};

/* How to enter namespaces before the plan runs (see aio_exec): an exec enters a running
 * container; an init joins the namespaces its config names by path. The fds are the caller's,
 * opened from the host (their paths do not resolve in the container). */
struct aio_join {
    const int *ns_fds;      /* /proc/<init>/ns/<type> or the config's paths (all but cgroup) */
    const int *ns_types;    /* CLONE_NEW* of each */
    int n_ns;
    int cgroupns_fd;        /* the init's cgroup namespace, joined by the process itself; or -1 */
    int root_fd;            /* the init's root (/proc/<init>/root), entered after the setns */
    int cgroup2_fd;         /* the container's cgroup2 directory (CLONE_INTO_CGROUP), or -1 */
    const int *tasks_fds;   /* the "tasks" file of each v1 hierarchy, written "0" by the process */
    const char *const *tasks_paths; /* the same, named in errors */
    int n_tasks;
    int init;               /* a container's init: cloned with the plan's clone_flags, forked (it blocks) */
    const char *time_offsets; /* init: unshare a time namespace with these offsets first, or NULL */
};

struct aio_error {
    int32_t kind; /* 'E' */
    int32_t err;
    char step[32];
    char path[4096];
};

/* A container hook that failed in the init (kind 'H'): sent instead of struct aio_error, on
 * the sync socket, or after start (startContainer) on the exec fifo. Under PIPE_BUF: one
 * atomic write. */
struct aio_hook_error {
    int32_t kind;      /* 'H' */
    int32_t status;    /* exit status, minus the signal that killed it; the timeout if timed_out */
    int32_t timed_out;
    char hook[32];     /* createContainer, startContainer */
    char path[1024];
    char output[2048]; /* the start of what it wrote on stdout and stderr */
};

int aio_spawn(const struct aio_spawn_args *args, int *pidfd_out);
/* Start a process through an intermediate that joins ``join``'s namespaces (see exec_intermediate). */
int aio_exec(const struct aio_spawn_args *args, const struct aio_join *join, int *pidfd_out, struct aio_error *err);
/* The sync channel and fd passing, here so that the CLI need not import Python's socket module. */
int aio_sync_pair(int fds[2]);
int aio_send_go(int sock, const int *fds, int n);
long aio_recv(int sock, void *buf, size_t len, int *fd_out);
int aio_unix_connect(const char *path);
int aio_send_fd(int sock, int fd, const char *name);

#endif
