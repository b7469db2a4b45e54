/*
 * The compiled half of aioruntime: clone3() a container init and carry out the
 * flat plan Python computed from the OCI config; or enter a running container and
 * start a process there the same way (aio_exec).
 *
 * After clone3() the child runs no Python and calls only async-signal-safe
 * functions (the parent may have threads).  It is deliberately dumb: every
 * decision was taken in aioruntime/plan.py; here we only execute records.
 *
 * Protocol on the SOCK_SEQPACKET sync socket (the child's end sits just above the
 * preserved fds):
 *   parent -> child  'M'          (user namespace) id maps written: go on past WAIT_MAPS
 *   parent -> child  'G' + fds    v1 tasks files opened (and a cgroup namespace to join):
 *                                 join them, go on past WAIT_GO
 *   child  -> parent 'R'          set up; now blocking on exec.fifo (exec: about to execve);
 *                                 carries the pty master (SCM_RIGHTS) with a TERMINAL step
 *   child  -> parent 'H'          (HOOKS_POINT) mounts made, before pivot_root: the parent runs
 *                                 the prestart and createRuntime hooks
 *   parent -> child  'C'          hooks done: go on (EOF instead: exit quietly)
 *   child  -> parent struct aio_error   a step failed (then the child exits)
 *   child  -> parent struct aio_hook_error   a createContainer hook failed
 * After start the exec fifo carries what went wrong (a startContainer hook, struct
 * aio_hook_error); its EOF (close-on-exec) tells start the process was exec'd.
 * EOF instead of 'G' means the parent died: the child exits quietly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/if.h>
#include <linux/keyctl.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <sys/personality.h>
#include <linux/sched.h>
#include <limits.h>
#include <poll.h>
#include <time.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "_clone.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

struct child {
    const struct aio_spawn_args *args;
    int sync_fd;
    int dir_fd;
    const char *root; /* the rootfs (ROOTFS record): paths below it never resolve outside it */
    size_t root_len;
    int root_fd;
    int slash_fd; /* "/" of the host, for paths outside the rootfs */
    int cwd_done;
    int seccomp_late;    /* load the filter after every other step (no_new_privileges) */
    unsigned int seccomp_flags;
    struct sock_fprog seccomp;
    /* here, not static: an exec'd process shares the caller's memory (and its other threads
     * may exec at the same time) until execve */
    struct sock_filter seccomp_insns[BPF_MAXINSNS];
    int console_fd; /* the pty master (TERMINAL record), sent to the parent with 'R' */
    size_t record_at; /* where the record being run starts in the plan */
    size_t start_hooks[AIO_MAX_HOOKS]; /* startContainer HOOK records, run after the exec fifo */
    int n_start_hooks;
    const char *hook_buf[AIO_MAX_STRS + 2]; /* a hook's argv, NULL, envp, NULL */
    const char **argv; /* NULL-terminated copies of the ARGV and ENV records */
    const char **envp;
    const char *argv_buf[AIO_MAX_STRS + 1];
    const char *envp_buf[AIO_MAX_STRS + 1];
    char exe[4096];
};

/* One record of the plan: op, then nint int64s, then nstr NUL-terminated strings. */
struct record {
    uint32_t op;
    int64_t ints[AIO_MAX_INTS];
    const char *strs[AIO_MAX_STRS];
    uint32_t nint, nstr;
};

static const char *opt(const char *s);

static size_t cstrlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void cstrlcpy(char *dst, const char *src, size_t size)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < size; i++)
        dst[i] = src[i];
    dst[i] = 0;
}

/* Tell the parent what failed: on the sync socket, or after start on the exec fifo. */
static void report(struct child *c, const void *buf, size_t len)
{
    if (send(c->sync_fd, buf, len, MSG_NOSIGNAL) < 0 && errno == ENOTSOCK)
        write(c->sync_fd, buf, len);
}

static void fail(struct child *c, const char *step, const char *path, int err)
{
    struct aio_error e;
    memset(&e, 0, sizeof(e));
    e.kind = 'E';
    e.err = err;
    cstrlcpy(e.step, step, sizeof(e.step));
    cstrlcpy(e.path, path, sizeof(e.path));
    report(c, &e, offsetof(struct aio_error, path) + cstrlen(e.path) + 1);
    _exit(AIO_EXIT_SETUP_FAILED);
}

static int open_in(int dirfd, const char *path, uint64_t flags)
{
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = flags | O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* Where to resolve a host path: below the rootfs, inside it (never through a symlink out of
 * it); elsewhere from "/". Returns the directory fd and sets *rel to the path relative to it. */
static int base_of(struct child *c, const char *path, const char **rel)
{
    if (c->root_fd >= 0 && strncmp(path, c->root, c->root_len) == 0 && path[c->root_len] == '/') {
        *rel = path + c->root_len + 1;
        return c->root_fd;
    }
    if (c->slash_fd < 0)
        c->slash_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    *rel = path + (path[0] == '/');
    return c->slash_fd;
}

/* The directory holding ``rel`` (resolved below ``base``) and its last component. */
static int parent_in(int base, char *rel, const char **name)
{
    char *slash = strrchr(rel, '/');
    if (!slash) {
        *name = rel;
        return fcntl(base, F_DUPFD_CLOEXEC, 0);
    }
    *slash = 0;
    int fd = open_in(base, rel, O_DIRECTORY);
    *slash = '/';
    *name = slash + 1;
    return fd;
}

/* mkdir -p of ``rel`` below ``base``, each component resolved there (symlinks included);
 * the last component is a file when as_file is set. */
static int make_in(int base, const char *rel, int as_file, mode_t mode)
{
    char buf[4096];
    cstrlcpy(buf, rel, sizeof(buf));
    size_t n = cstrlen(buf);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0)
            continue;
        char saved = buf[i];
        buf[i] = 0;
        int fd = open_in(base, buf, 0);
        if (fd >= 0) {
            close(fd);
        } else if (errno == ENOENT) {
            const char *name;
            int dir = parent_in(base, buf, &name);
            if (dir < 0)
                return -1;
            int rc = 0;
            if (saved == 0 && as_file) {
                int f = openat(dir, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (f >= 0)
                    close(f);
                else if (errno != EEXIST)
                    rc = -1;
            } else if (mkdirat(dir, name, mode) < 0 && errno != EEXIST) {
                rc = -1;
            }
            close(dir);
            if (rc < 0)
                return -1;
        } else {
            return -1;
        }
        buf[i] = saved;
    }
    return 0;
}

/* ``prefix`` then ``n`` in decimal, without snprintf (not async-signal-safe). */
static void numbered(char *out, const char *prefix, unsigned int n)
{
    char digits[16];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    size_t len = cstrlen(prefix);
    memcpy(out, prefix, len);
    out += len;
    while (k)
        *out++ = digits[--k];
    *out = 0;
}

/* "/proc/self/fd/N": how mount(2) is pointed at a target resolved through an fd. */
static void fd_path(char *out, int fd)
{
    numbered(out, "/proc/self/fd/", (unsigned int)fd);
}

/* Mount onto ``target``, resolved (and made) through base_of(): a symlink planted in the
 * rootfs cannot send the mount, or the mkdir before it, onto the host. */
static void mount_at(struct child *c, const struct record *r, char *scratch)
{
    const char *rel;
    int base = base_of(c, r->strs[1], &rel), make = (int)r->ints[1];
    if (make && make_in(base, rel, make == 2, 0755) < 0)
        fail(c, "mkdir", r->strs[1], errno);
    int fd = rel[0] ? open_in(base, rel, 0) : fcntl(base, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        fail(c, "mount", r->strs[1], errno);
    fd_path(scratch, fd);
    if (mount(opt(r->strs[0]), scratch, opt(r->strs[2]), (unsigned long)r->ints[0], opt(r->strs[3])) < 0)
        fail(c, "mount", r->strs[1], errno);
    close(fd);
}

/* Run fn on (directory fd, last component) of a path, resolved through base_of(). */
static int at_path(struct child *c, const char *path, char *scratch, int (*fn)(int, const char *, const struct record *),
                   const struct record *r)
{
    const char *rel, *name;
    int base = base_of(c, path, &rel);
    cstrlcpy(scratch, rel, 4096);
    int dir = parent_in(base, scratch, &name);
    if (dir < 0)
        return -1;
    int rc = fn(dir, name, r);
    int err = errno;
    close(dir);
    errno = err;
    return rc;
}

static int do_mknod(int dir, const char *name, const struct record *r)
{
    if (mknodat(dir, name, (mode_t)r->ints[0], makedev(r->ints[1], r->ints[2])) < 0 && errno != EEXIST)
        return -1;
    return fchownat(dir, name, (uid_t)r->ints[3], (gid_t)r->ints[4], AT_SYMLINK_NOFOLLOW);
}

static int do_symlink(int dir, const char *name, const struct record *r)
{
    return symlinkat(r->strs[0], dir, name) < 0 && errno != EEXIST ? -1 : 0;
}

static int do_unlink(int dir, const char *name, const struct record *r)
{
    return unlinkat(dir, name, 0) < 0 && errno != ENOENT ? -1 : 0;
}

/* The parent's go: one byte 'G', with the v1 tasks fds to join. Returns their count. */
static int recv_go(int sock, int fds[AIO_MAX_JOIN])
{
    char go = 0;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * AIO_MAX_JOIN)];
    } control;
    struct iovec iov = {&go, 1};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1 || go != 'G')
        return -1;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
        return 0;
    int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    memcpy(fds, CMSG_DATA(cm), (size_t)n * sizeof(int));
    return n;
}

static int write_file(const char *path, const char *content)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    size_t n = cstrlen(content);
    ssize_t w = write(fd, content, n);
    int err = errno;
    close(fd);
    errno = err;
    return w == (ssize_t)n ? 0 : -1;
}

static int hex_value(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* The filter arrives hex-encoded (plan strings end at NUL; BPF is full of them). */
static int decode_filter(struct child *c, const char *hex)
{
    unsigned char *out = (unsigned char *)c->seccomp_insns;
    size_t n = cstrlen(hex);
    if (n % (2 * sizeof(struct sock_filter)) || n / 2 > sizeof(c->seccomp_insns))
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    c->seccomp.len = (unsigned short)(n / 2 / sizeof(struct sock_filter));
    c->seccomp.filter = c->seccomp_insns;
    return 0;
}

static void load_filter(struct child *c)
{
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, c->seccomp_flags, &c->seccomp) < 0)
        fail(c, "seccomp", "", errno);
}

static int remount_ro(const char *path, int bind_first)
{
    struct statvfs sv;
    unsigned long keep = 0;
    if (bind_first && mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
        return -1;
    if (statvfs(path, &sv) == 0) {
        keep = sv.f_flag & (ST_NOSUID | ST_NODEV | ST_NOEXEC | ST_NOATIME | ST_NODIRATIME | ST_RELATIME);
    }
    return mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, NULL);
}

/* lo up in the new network namespace: one ioctl, as crun does; networks come later, from Python */
static int loopback_up(void)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    memset(&ifr, 0, sizeof(ifr));
    cstrlcpy(ifr.ifr_name, "lo", sizeof(ifr.ifr_name));
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int err = errno;
    close(s);
    errno = err;
    return rc;
}

/* A new session keyring named ``name`` (or the one of that name this user has), so the
 * container does not share the caller's (runc's default); ``setbits`` are ORed into its
 * permissions (search for the possessor's uid, or for others in a user namespace), 0 leaves
 * them. A kernel without keyrings (ENOSYS) is no error, as in runc. */
static int join_session_keyring(const char *name, uint32_t setbits)
{
    long id = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name, 0, 0, 0);
    if (id < 0)
        return errno == ENOSYS ? 0 : -1;
    if (!setbits)
        return 0;
    /* "type;uid;gid;perm;description": perm is the fourth field, in hex */
    char desc[256];
    long n = syscall(SYS_keyctl, KEYCTL_DESCRIBE, id, desc, sizeof(desc) - 1, 0);
    if (n < 0)
        return -1;
    desc[n < (long)sizeof(desc) ? n : (long)sizeof(desc) - 1] = 0;
    const char *p = desc;
    for (int semis = 0; *p && semis < 3; p++)
        semis += *p == ';';
    uint32_t perm = 0;
    for (; *p && *p != ';'; p++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (d < 0) {
            errno = EINVAL;
            return -1;
        }
        perm = perm << 4 | (uint32_t)d;
    }
    return syscall(SYS_keyctl, KEYCTL_SETPERM, id, perm | setbits, 0, 0) < 0 ? -1 : 0;
}

static int pivot_into(const char *rootfs)
{
    int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    int newroot = open(rootfs, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (oldroot < 0 || newroot < 0)
        return -1;
    if (fchdir(newroot) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
        return -1;
    /* The old root now sits on top of the new one: detach it without letting
     * the unmount propagate back to the host. */
    if (fchdir(oldroot) < 0 || mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0 ||
        umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        return -1;
    close(oldroot);
    close(newroot);
    return 0;
}

static int move_into(const char *rootfs)
{
    if (chdir(rootfs) < 0 || mount(rootfs, "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
        chdir("/") < 0)
        return -1;
    return 0;
}

static int mask_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (S_ISDIR(st.st_mode))
        return mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL);
    return mount("/dev/null", path, NULL, MS_BIND, NULL);
}

/* No mount namespace of its own (or one joined by path, left as it is): only a chroot into
 * the rootfs, as crun does; ints: none, strs: the rootfs */
static int chroot_into(const char *rootfs)
{
    if (chdir(rootfs) < 0 || chroot(".") < 0)
        return -1;
    return chdir("/");
}

/* sched_setattr(2)'s argument (SCHED_ATTR_SIZE_VER1, as runc passes it: the utilization
 * clamps, which the spec does not set, stay 0); glibc declares it only from 2.41 */
struct aio_sched_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
    uint32_t util_min, util_max;
};

/* ints: policy, flags, nice, priority, runtime, deadline, period */
static int set_scheduler(const struct record *r)
{
    struct aio_sched_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.policy = (uint32_t)r->ints[0];
    attr.flags = (uint64_t)r->ints[1];
    attr.nice = (int32_t)r->ints[2];
    attr.priority = (uint32_t)r->ints[3];
    attr.runtime = (uint64_t)r->ints[4];
    attr.deadline = (uint64_t)r->ints[5];
    attr.period = (uint64_t)r->ints[6];
    return (int)syscall(SYS_sched_setattr, 0, &attr, 0);
}

/* Raw syscalls, not glibc's wrappers: those signal every thread glibc believes the process
 * has (setxid broadcast), and this copy of a multithreaded parent has only one. */
static int set_user(const struct record *r)
{
    gid_t groups[AIO_MAX_INTS];
    size_t n = 0;
    for (uint32_t i = 3; i < r->nint; i++)
        groups[n++] = (gid_t)r->ints[i];
    if (r->ints[2] && syscall(SYS_setgroups, n, groups) < 0)
        return -1;
    if (syscall(SYS_setresgid, (gid_t)r->ints[1], (gid_t)r->ints[1], (gid_t)r->ints[1]) < 0)
        return -1;
    return (int)syscall(SYS_setresuid, (uid_t)r->ints[0], (uid_t)r->ints[0], (uid_t)r->ints[0]);
}

static int drop_bounding(const struct record *r)
{
    /* ints: last_cap, mask to keep */
    for (int64_t cap = 0; cap <= r->ints[0]; cap++)
        if (!((uint64_t)r->ints[1] & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return -1;
    return 0;
}

static int set_caps(const struct record *r)
{
    /* ints: last_cap, effective, permitted, inheritable, ambient */
    int64_t last = r->ints[0];
    uint64_t eff = (uint64_t)r->ints[1], perm = (uint64_t)r->ints[2], inh = (uint64_t)r->ints[3],
             amb = (uint64_t)r->ints[4];
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    data[0].effective = (uint32_t)eff;
    data[1].effective = (uint32_t)(eff >> 32);
    data[0].permitted = (uint32_t)perm;
    data[1].permitted = (uint32_t)(perm >> 32);
    data[0].inheritable = (uint32_t)inh;
    data[1].inheritable = (uint32_t)(inh >> 32);
    if (syscall(SYS_capset, &hdr, data) < 0)
        return -1;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return -1;
    /* A cap outside the inheritable set cannot be ambient (EPERM): runc's default spec asks
     * for exactly that, and runc and crun skip it, so do we. */
    for (int64_t cap = 0; cap <= last; cap++)
        if ((amb & (1ULL << cap)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0 && errno != EPERM)
            return -1;
    return 0;
}

/* One datagram, with ``n`` fds attached (SCM_RIGHTS). */
static int send_msg(int sock, const void *buf, size_t len, const int *fds, int n)
{
    struct iovec iov = {(void *)buf, len};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * AIO_MAX_JOIN)];
    } u;
    struct msghdr m;
    if (n < 0 || n > AIO_MAX_JOIN) {
        errno = EINVAL;
        return -1;
    }
    memset(&m, 0, sizeof(m));
    memset(&u, 0, sizeof(u));
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (n > 0) {
        m.msg_control = u.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)n);
    }
    return sendmsg(sock, &m, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

/* A pty from the container's own devpts: its peer becomes stdio and the controlling terminal
 * (we are a session leader: setsid at the start), the master is kept for the 'R' report.
 * ints: rows, cols (0: leave the size), owner uid of the peer, bind the peer on /dev/console */
static void open_terminal(struct child *c, const struct record *r, char *scratch)
{
    static const char ptmx[] = "/dev/pts/ptmx";
    int master = open(ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC), unlock = 0;
    if (master < 0)
        fail(c, "terminal", ptmx, errno);
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        fail(c, "terminal", "unlock", errno);
    if (r->ints[0] && r->ints[1]) {
        struct winsize ws = {(unsigned short)r->ints[0], (unsigned short)r->ints[1], 0, 0};
        if (ioctl(master, TIOCSWINSZ, &ws) < 0)
            fail(c, "terminal", "window size", errno);
    }
    int peer = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (peer < 0)
        fail(c, "terminal", "peer", errno);
    if (fchown(peer, (uid_t)r->ints[2], (gid_t)-1) < 0) /* the user must control its terminal */
        fail(c, "terminal", "chown", errno);
    if (r->ints[3]) {
        unsigned int n;
        struct stat st;
        if (ioctl(master, TIOCGPTN, &n) < 0)
            fail(c, "terminal", "pty number", errno);
        numbered(scratch, "/dev/pts/", n);
        if (stat("/dev/console", &st) < 0) {
            int f = open("/dev/console", O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
            if (f < 0)
                fail(c, "terminal", "/dev/console", errno);
            close(f);
        }
        if (mount(scratch, "/dev/console", NULL, MS_BIND, NULL) < 0)
            fail(c, "mount", "/dev/console", errno);
    }
    if (ioctl(peer, TIOCSCTTY, 0) < 0)
        fail(c, "terminal", "controlling terminal", errno);
    for (int i = 0; i < 3; i++)
        if (dup3(peer, i, 0) < 0)
            fail(c, "terminal", "stdio", errno);
    close(peer);
    c->console_fd = master;
}

static const char *env_path(const char **envp)
{
    for (; *envp; envp++)
        if (strncmp(*envp, "PATH=", 5) == 0)
            return *envp + 5;
    return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

/* Find argv[0] as execvp would, inside the container, after the user switch. */
static void resolve_exe(struct child *c)
{
    const char *name = c->argv[0];
    struct stat st;
    if (strchr(name, '/')) {
        if (stat(name, &st) < 0)
            fail(c, "exec", name, errno);
        if (S_ISDIR(st.st_mode))
            fail(c, "exec", name, EACCES);
        if (access(name, X_OK) < 0)
            fail(c, "exec", name, errno);
        cstrlcpy(c->exe, name, sizeof(c->exe));
        return;
    }
    const char *p = env_path(c->envp);
    int denied = 0;
    while (*p) {
        const char *end = strchrnul(p, ':');
        size_t dlen = (size_t)(end - p), nlen = cstrlen(name);
        if (dlen + nlen + 2 < sizeof(c->exe)) {
            memcpy(c->exe, dlen ? p : ".", dlen ? dlen : 1);
            size_t at = dlen ? dlen : 1;
            c->exe[at] = '/';
            memcpy(c->exe + at + 1, name, nlen + 1);
            if (stat(c->exe, &st) == 0 && !S_ISDIR(st.st_mode)) {
                if (access(c->exe, X_OK) == 0)
                    return;
                denied = 1;
            }
        }
        p = *end ? end + 1 : end;
    }
    fail(c, denied ? "exec" : "exec-lookup", name, denied ? EACCES : ENOENT);
}

/* -- container hooks run by the init (createContainer, startContainer) -------------------
 * HOOK record: ints: after start (startContainer), timeout in seconds (0: none), nargs;
 * strs: kind, path, the state before and after its pid, args..., env... */
#define HOOK_FIXED 4
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static void hook_failed(struct child *c, const struct record *r, int status, int timed_out, const char *out)
{
    struct aio_hook_error e;
    memset(&e, 0, sizeof(e));
    e.kind = 'H';
    e.status = status;
    e.timed_out = timed_out;
    cstrlcpy(e.hook, r->strs[0], sizeof(e.hook));
    cstrlcpy(e.path, r->strs[1], sizeof(e.path));
    cstrlcpy(e.output, out, sizeof(e.output));
    report(c, &e, sizeof(e));
    _exit(AIO_EXIT_SETUP_FAILED);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The state on the hook's stdin, in pieces: before the pid, the pid, after it. */
struct feed {
    const char *seg[3];
    int i;
    size_t at;
};

/* Write what the pipe takes; returns 1 once all is written (or the hook closed its stdin). */
static int feed_more(struct feed *f, int fd)
{
    while (f->i < 3) {
        size_t left = cstrlen(f->seg[f->i]) - f->at;
        if (!left) {
            f->i++;
            f->at = 0;
            continue;
        }
        ssize_t w = write(fd, f->seg[f->i] + f->at, left);
        if (w < 0)
            return errno == EAGAIN ? 0 : 1; /* EPIPE: it does not read its stdin */
        f->at += (size_t)w;
    }
    return 1;
}

/* Keep the first bytes of the hook's output (NUL-terminated in out); returns 1 at EOF. */
static int collect(int fd, char *out, size_t size, size_t *got)
{
    char sink[512];
    for (;;) {
        char *to = *got + 1 < size ? out + *got : sink;
        size_t room = *got + 1 < size ? size - 1 - *got : sizeof(sink);
        ssize_t n = read(fd, to, room);
        if (n <= 0)
            return n == 0 || errno != EAGAIN;
        if (to != sink) {
            *got += (size_t)n;
            out[*got] = 0;
        }
    }
}

/* ``from`` as fd ``to``, without close-on-exec (dup2 onto itself would keep it). */
static void onto(int from, int to)
{
    if (from == to)
        fcntl(to, F_SETFD, 0);
    else
        dup2(from, to);
}

/* Run one hook as our child: execve its path (resolved in our mount namespace and root as
 * they are now), its state on stdin with our pid (runc's init reports getpid()), stdout
 * and stderr collected. Its exit is watched through a pidfd, polled with the timeout: on
 * expiry it is killed. A failure ends the init with an aio_hook_error report. */
static void run_hook(struct child *c, const struct record *r)
{
    size_t nargs = (size_t)r->ints[2];
    if (r->nstr < HOOK_FIXED + nargs || nargs == 0)
        fail(c, "plan", "hook record", EINVAL);
    const char **argv = c->hook_buf, **envp = c->hook_buf + nargs + 1;
    for (size_t i = 0; i < nargs; i++)
        argv[i] = r->strs[HOOK_FIXED + i];
    argv[nargs] = NULL;
    size_t nenv = r->nstr - HOOK_FIXED - nargs;
    for (size_t i = 0; i < nenv; i++)
        envp[i] = r->strs[HOOK_FIXED + nargs + i];
    envp[nenv] = NULL;

    char pid[24], out[sizeof(((struct aio_hook_error *)0)->output)];
    numbered(pid, "", (unsigned int)getpid());
    struct feed f = {{r->strs[2], pid, r->strs[3]}, 0, 0};
    int in[2], outp[2], pidfd = -1;
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0)
        fail(c, "hook pipe", r->strs[1], errno);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN; /* a hook that does not read its stdin must not kill us */
    sigaction(SIGPIPE, &sa, NULL);
    struct clone_args ca;
    memset(&ca, 0, sizeof(ca));
    ca.flags = CLONE_PIDFD;
    ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
    ca.exit_signal = SIGCHLD;
    long child = syscall(SYS_clone3, &ca, sizeof(ca));
    if (child == 0) {
        sa.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &sa, NULL);
        onto(in[0], 0);
        onto(outp[1], 1);
        onto(outp[1], 2);
        syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC); /* the preserved fds too */
        execve(r->strs[1], (char *const *)argv, (char *const *)envp);
        static const char msg[] = "cannot execute the hook: ";
        const char *why = strerrordesc_np(errno);
        write(2, msg, sizeof(msg) - 1);
        if (why)
            write(2, why, cstrlen(why));
        _exit(127);
    }
    int err = errno;
    close(in[0]);
    close(outp[1]);
    if (child < 0)
        fail(c, "hook clone3", r->strs[1], err);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(outp[0], F_SETFL, O_NONBLOCK);
    int64_t deadline = r->ints[1] > 0 ? now_ms() + r->ints[1] * 1000 : -1;
    struct pollfd p[3] = {{pidfd, POLLIN, 0}, {outp[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
    size_t got = 0;
    int timed_out = 0;
    out[0] = 0;
    for (;;) {
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0) {
                timed_out = 1;
                syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                break;
            }
            wait = left > INT_MAX ? INT_MAX : (int)left;
        }
        p[0].revents = p[1].revents = p[2].revents = 0;
        if (poll(p, 3, wait) < 0 && errno != EINTR)
            fail(c, "hook poll", r->strs[1], errno);
        if (p[2].revents && feed_more(&f, p[2].fd)) {
            close(p[2].fd);
            p[2].fd = -1; /* its EOF */
        }
        if (p[1].revents && collect(p[1].fd, out, sizeof(out), &got)) {
            close(p[1].fd);
            p[1].fd = -1;
        }
        if (p[0].revents)
            break;
    }
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    while (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
        ;
    if (p[1].fd >= 0) { /* what it wrote before it exited; not what its own children write on */
        collect(p[1].fd, out, sizeof(out), &got);
        close(p[1].fd);
    }
    if (p[2].fd >= 0)
        close(p[2].fd);
    close(pidfd);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &sa, NULL);
    int status = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
    if (timed_out || status != 0)
        hook_failed(c, r, timed_out ? (int)r->ints[1] : status, timed_out, out);
}

static size_t read_record(const char *plan, size_t len, size_t at, struct record *r)
{
    uint32_t hdr[3];
    memcpy(hdr, plan + at, sizeof(hdr));
    at += sizeof(hdr);
    r->op = hdr[0];
    r->nint = hdr[1] <= AIO_MAX_INTS ? hdr[1] : 0;
    r->nstr = hdr[2] <= AIO_MAX_STRS ? hdr[2] : 0;
    if (r->nint != hdr[1] || r->nstr != hdr[2])
        r->op = 0; /* refused below as an unknown record: Python checks the limits first */
    memcpy(r->ints, plan + at, r->nint * sizeof(int64_t));
    at += r->nint * sizeof(int64_t);
    for (uint32_t i = 0; i < r->nstr; i++) {
        r->strs[i] = plan + at;
        at += cstrlen(plan + at) + 1;
    }
    return at <= len ? at : len;
}

static const char **copy_list(const char **dst, const struct record *r)
{
    for (uint32_t i = 0; i < r->nstr; i++)
        dst[i] = r->strs[i];
    dst[r->nstr] = NULL;
    return dst;
}

static const char *opt(const char *s)
{
    return s[0] ? s : NULL;
}

/* Once in the container's root, host paths resolve no more (see base_of). */
static void close_host_dirs(struct child *c)
{
    close(c->root_fd);
    close(c->slash_fd);
    c->root_fd = c->slash_fd = -1;
}

static void run_record(struct child *c, struct record *r, char *scratch)
{
    switch (r->op) {
    case AIO_OP_ROOTFS:
        c->root = r->strs[0];
        c->root_len = cstrlen(c->root);
        c->root_fd = open(c->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (c->root_fd < 0)
            fail(c, "open rootfs", c->root, errno);
        break;
    case AIO_OP_MOUNT:
        /* ints: flags, make(0 none, 1 dir, 2 file); strs: source, target, fstype, data */
        mount_at(c, r, scratch);
        break;
    case AIO_OP_MKDIR: {
        const char *rel;
        int base = base_of(c, r->strs[0], &rel);
        if (make_in(base, rel, 0, (mode_t)r->ints[0]) < 0)
            fail(c, "mkdir", r->strs[0], errno);
        break;
    }
    case AIO_OP_MKNOD:
        /* ints: mode (type|perm), major, minor, uid, gid; strs: path */
        if (at_path(c, r->strs[0], scratch, do_mknod, r) < 0)
            fail(c, "mknod", r->strs[0], errno);
        break;
    case AIO_OP_SYMLINK:
        if (at_path(c, r->strs[1], scratch, do_symlink, r) < 0)
            fail(c, "symlink", r->strs[1], errno);
        break;
    case AIO_OP_UNLINK:
        if (at_path(c, r->strs[0], scratch, do_unlink, r) < 0)
            fail(c, "unlink", r->strs[0], errno);
        break;
    case AIO_OP_PIVOT_ROOT:
        close_host_dirs(c);
        if (pivot_into(r->strs[0]) < 0)
            fail(c, "pivot_root", r->strs[0], errno);
        break;
    case AIO_OP_MOVE_ROOT:
        close_host_dirs(c);
        if (move_into(r->strs[0]) < 0)
            fail(c, "chroot", r->strs[0], errno);
        break;
    case AIO_OP_CHROOT:
        close_host_dirs(c);
        if (chroot_into(r->strs[0]) < 0)
            fail(c, "chroot", r->strs[0], errno);
        break;
    case AIO_OP_IOPRIO:
        /* ints: class << 13 | level, for this process (IOPRIO_WHO_PROCESS, 0) */
        if (syscall(SYS_ioprio_set, 1, 0, (int)r->ints[0]) < 0)
            fail(c, "ioprio_set", "", errno);
        break;
    case AIO_OP_SCHED:
        if (set_scheduler(r) < 0)
            fail(c, "sched_setattr", "", errno);
        break;
    case AIO_OP_MASK:
        if (mask_path(r->strs[0]) < 0)
            fail(c, "mask", r->strs[0], errno);
        break;
    case AIO_OP_READONLY:
        /* ints: bind first (readonlyPaths) or not (the root itself) */
        if (remount_ro(r->strs[0], (int)r->ints[0]) < 0 && !(errno == ENOENT && r->ints[0]))
            fail(c, "remount read-only", r->strs[0], errno);
        break;
    case AIO_OP_HOSTNAME:
        if (sethostname(r->strs[0], cstrlen(r->strs[0])) < 0)
            fail(c, "sethostname", r->strs[0], errno);
        break;
    case AIO_OP_LOOPBACK_UP:
        if (loopback_up() < 0)
            fail(c, "loopback up", "lo", errno);
        break;
    case AIO_OP_DOMAINNAME:
        if (setdomainname(r->strs[0], cstrlen(r->strs[0])) < 0)
            fail(c, "setdomainname", r->strs[0], errno);
        break;
    case AIO_OP_RLIMIT: {
        struct rlimit rl = {(rlim_t)r->ints[2], (rlim_t)r->ints[1]};
        if (setrlimit((int)r->ints[0], &rl) < 0)
            fail(c, "setrlimit", r->strs[0], errno);
        break;
    }
    case AIO_OP_KEEPCAPS:
        if (prctl(PR_SET_KEEPCAPS, r->ints[0], 0, 0, 0) < 0)
            fail(c, "prctl keepcaps", "", errno);
        break;
    case AIO_OP_USER:
        /* ints: uid, gid, call setgroups, additional gids... */
        if (set_user(r) < 0)
            fail(c, "setuid", "", errno);
        break;
    case AIO_OP_CAPS_BOUNDING:
        if (drop_bounding(r) < 0)
            fail(c, "capabilities", "bounding set", errno);
        break;
    case AIO_OP_CAPS:
        if (set_caps(r) < 0)
            fail(c, "capabilities", "", errno);
        break;
    case AIO_OP_NO_NEW_PRIVS:
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            fail(c, "no_new_privs", "", errno);
        break;
    case AIO_OP_UMASK:
        umask((mode_t)r->ints[0]);
        break;
    case AIO_OP_CHDIR:
        /* ints: before the user switch (as root: a cwd only the user may enter is retried
         * after the switch, as runc does) or after it */
        if (c->cwd_done)
            break;
        if (chdir(r->strs[0]) == 0)
            c->cwd_done = 1;
        else if (!r->ints[0] || (errno != EACCES && errno != EPERM))
            fail(c, "chdir", r->strs[0], errno);
        break;
    case AIO_OP_WAIT_MAPS: {
        /* in a new user namespace nothing touches a file before the parent wrote the id maps;
         * ints: wait for them (0: a user namespace joined by path, mapped already) */
        char maps = 0;
        if (r->ints[0] && (recv(c->sync_fd, &maps, 1, 0) != 1 || maps != 'M'))
            _exit(AIO_EXIT_SETUP_FAILED);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        /* the init still has the host's ids, unmapped here: become the namespace's root */
        if (setgroups(0, NULL) < 0 && errno != EPERM)
            fail(c, "setgroups in the user namespace", "", errno);
        if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
            fail(c, "become root of the user namespace", "uid and gid 0 must be mapped", errno);
        break;
    }
    case AIO_OP_WAIT_GO: {
        /* ints: namespaces to unshare once in the cgroups (CLONE_NEWCGROUP); strs: the v1
         * tasks files, which arrive opened with the go (the parent's credentials are what
         * the kernel checks, so this works from a user namespace too) */
        int fds[AIO_MAX_JOIN];
        int n = recv_go(c->sync_fd, fds);
        if (n < 0)
            _exit(AIO_EXIT_SETUP_FAILED); /* the parent died or gave up: leave quietly */
        /* ints[1]: the last fd is a cgroup namespace to join (by path) once in the cgroups */
        int cgroupns = r->nint > 1 && r->ints[1] && n > 0 ? fds[--n] : -1;
        for (int i = 0; i < n; i++) {
            if (write(fds[i], "0", 1) != 1)
                fail(c, "join cgroup", i < (int)r->nstr ? r->strs[i] : "", errno);
            close(fds[i]);
        }
        if (r->ints[0] && unshare((int)r->ints[0]) < 0)
            fail(c, "unshare", "cgroup namespace", errno);
        if (cgroupns >= 0 && setns(cgroupns, CLONE_NEWCGROUP) < 0)
            fail(c, "setns", "cgroup", errno);
        if (cgroupns >= 0)
            close(cgroupns);
        break;
    }
    case AIO_OP_WRITE_FILE:
        if (write_file(r->strs[0], r->strs[1]) < 0)
            fail(c, "write", r->strs[0], errno);
        break;
    case AIO_OP_PERSONALITY:
        if (personality((unsigned long)r->ints[0]) < 0)
            fail(c, "personality", "", errno);
        break;
    case AIO_OP_SECCOMP:
        /* ints: seccomp(2) flags, late; strs: the BPF program, hex */
        if (decode_filter(c, r->strs[0]) < 0)
            fail(c, "seccomp", "malformed filter", EINVAL);
        c->seccomp_flags = (unsigned int)r->ints[0];
        c->seccomp_late = (int)r->ints[1];
        if (!c->seccomp_late)
            load_filter(c);
        break;
    case AIO_OP_TERMINAL:
        open_terminal(c, r, scratch);
        break;
    case AIO_OP_SESSION_KEYRING:
        /* ints: permission bits to add; strs: the keyring's name */
        if (join_session_keyring(r->strs[0], (uint32_t)r->ints[0]) < 0)
            fail(c, "join session keyring", r->strs[0], errno);
        break;
    case AIO_OP_HOOKS_POINT: {
        /* the parent runs the prestart and createRuntime hooks: our mounts are made, our
         * root is not yet pivoted; 'C' when they succeeded, else it kills us */
        char h = 'H', resume = 0;
        if (send(c->sync_fd, &h, 1, MSG_NOSIGNAL) != 1 || recv(c->sync_fd, &resume, 1, 0) != 1 || resume != 'C')
            _exit(AIO_EXIT_SETUP_FAILED);
        break;
    }
    case AIO_OP_HOOK:
        if (!r->ints[0]) {
            run_hook(c, r);
        } else if (c->n_start_hooks < AIO_MAX_HOOKS) {
            c->start_hooks[c->n_start_hooks++] = c->record_at;
        } else {
            fail(c, "plan", "too many startContainer hooks", E2BIG);
        }
        break;
    case AIO_OP_ARGV:
        c->argv = copy_list(c->argv_buf, r);
        break;
    case AIO_OP_ENV:
        c->envp = copy_list(c->envp_buf, r);
        break;
    default:
        fail(c, "plan", "unknown record", EINVAL);
    }
}

/* Put stdio on 0-2, the preserved fds on 3.., then sync and the state dir (if any); close
 * the rest. The preserved fds lose close-on-exec: a library caller's fds have it. */
static void arrange_fds(struct child *c)
{
    const struct aio_spawn_args *a = c->args;
    int floor = 3 + a->preserve_fds + 2 + 8;
    int tmp[5];
    int src[5] = {a->stdio[0], a->stdio[1], a->stdio[2], a->sync_fd, a->state_dir_fd};
    for (int i = 0; i < 5; i++) {
        int from = src[i] >= 0 ? src[i] : (i < 3 ? i : -1);
        tmp[i] = from >= 0 ? fcntl(from, F_DUPFD_CLOEXEC, floor) : -1;
        if (tmp[i] < 0 && i == 3)
            _exit(AIO_EXIT_SETUP_FAILED);
    }
    for (int i = 0; i < 3; i++) {
        if (tmp[i] >= 0)
            dup2(tmp[i], i);
        else
            close(i);
    }
    for (int i = 3; i < 3 + a->preserve_fds; i++)
        fcntl(i, F_SETFD, 0);
    c->sync_fd = 3 + a->preserve_fds;
    dup3(tmp[3], c->sync_fd, O_CLOEXEC);
    c->dir_fd = tmp[4] >= 0 ? c->sync_fd + 1 : -1;
    if (c->dir_fd >= 0)
        dup3(tmp[4], c->dir_fd, O_CLOEXEC);
    syscall(SYS_close_range, c->sync_fd + 1 + (c->dir_fd >= 0), ~0U, 0);
}

/* exec: what the process does itself of joining the container, first thing. The v1
 * hierarchies are joined through "tasks" with "0": moving the calling thread alone, the
 * kernel skips the global threadgroup lock whose first write after a quiet spell waits for
 * an RCU grace period (10-25 ms), as a write to cgroup.procs does. The cgroup namespace
 * comes after the cgroup2 placement (CLONE_INTO_CGROUP), which must be checked against the
 * caller's cgroup namespace. */
static void join_rest(struct child *c, const struct aio_join *j)
{
    if (j->cgroupns_fd >= 0 && setns(j->cgroupns_fd, CLONE_NEWCGROUP) < 0)
        fail(c, "setns", "cgroup", errno);
    for (int i = 0; i < j->n_tasks; i++)
        if (write(j->tasks_fds[i], "0", 1) != 1)
            fail(c, "join cgroup", j->tasks_paths[i], errno);
}

static void reset_signals(void)
{
    struct sigaction sa;
    sigset_t none;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++)
        sigaction(sig, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void child_main(const struct aio_spawn_args *args, const struct aio_join *join)
{
    struct child c;
    struct record r;
    char scratch[4096];
    memset(&c, 0, sizeof(c));
    c.args = args;
    c.argv = NULL;
    c.root_fd = -1;
    c.slash_fd = -1;
    c.console_fd = -1;
    c.sync_fd = args->sync_fd;
    reset_signals();
    /* not dumpable, so nothing in the container can open /proc/<init>/...; in a new user
     * namespace only once the parent (maybe unprivileged) has written our id maps */
    if (!(args->clone_flags & CLONE_NEWUSER))
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (join)
        join_rest(&c, join);
    arrange_fds(&c);
    if (setsid() < 0)
        fail(&c, "setsid", "", errno);
    umask(0);
    for (size_t at = 0; at < args->plan_len;) {
        c.record_at = at;
        at = read_record(args->plan, args->plan_len, at, &r);
        run_record(&c, &r, scratch);
    }
    if (!c.argv || !c.argv[0] || !c.envp)
        fail(&c, "plan", "no argv", EINVAL);
    resolve_exe(&c);
    /* as runc: with startContainer hooks the late filter comes after them (they run here) */
    int hooks_late = args->wait_fifo && c.n_start_hooks;
    if (c.seccomp_late && !hooks_late)
        load_filter(&c);
    char ready = 'R';
    if (send_msg(c.sync_fd, &ready, 1, &c.console_fd, c.console_fd >= 0) < 0)
        _exit(AIO_EXIT_SETUP_FAILED);
    close(c.sync_fd);
    if (c.console_fd >= 0)
        close(c.console_fd);
    if (args->wait_fifo) {
        /* kept open until execve (close-on-exec): start reads to its EOF, and before it
         * whatever failed in between (start_hooks) */
        int fifo = openat(c.dir_fd, "exec.fifo", O_WRONLY | O_CLOEXEC);
        if (fifo < 0 || write(fifo, "0", 1) != 1)
            _exit(AIO_EXIT_SETUP_FAILED);
        c.sync_fd = fifo;
        for (int i = 0; i < c.n_start_hooks; i++) {
            read_record(args->plan, args->plan_len, c.start_hooks[i], &r);
            run_hook(&c, &r);
        }
        if (c.seccomp_late && hooks_late)
            load_filter(&c);
    }
    if (c.dir_fd >= 0)
        close(c.dir_fd);
    execve(c.exe, (char *const *)c.argv, (char *const *)c.envp);
    int err = errno;
    static const char msg[] = "aioruntime: exec failed: ";
    write(2, msg, sizeof(msg) - 1);
    write(2, c.exe, cstrlen(c.exe));
    write(2, ": ", 2);
    const char *why = strerrordesc_np(err); /* a table lookup: no locale, no allocation */
    if (why)
        write(2, why, cstrlen(why));
    write(2, "\n", 1);
    _exit(err == ENOENT ? 127 : 126);
}

int aio_send_go(int sock, const int *fds, int n)
{
    return send_msg(sock, "G", 1, fds, n) < 0 ? -errno : 0;
}

int aio_sync_pair(int fds[2])
{
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0 ? -errno : 0;
}

int aio_spawn(const struct aio_spawn_args *args, int *pidfd_out)
{
    struct clone_args ca;
    int pidfd = -1;
    memset(&ca, 0, sizeof(ca));
    ca.flags = args->clone_flags | CLONE_PIDFD;
    ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
    ca.exit_signal = SIGCHLD;
    if (args->cgroup2_fd >= 0) { /* born in its cgroup2 cgroup: no migration, no grace period */
        ca.flags |= CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)args->cgroup2_fd;
    }
    long pid = syscall(SYS_clone3, &ca, sizeof(ca));
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        child_main(args, NULL);
        _exit(AIO_EXIT_SETUP_FAILED);
    }
    *pidfd_out = pidfd;
    return (int)pid;
}

struct exec_ctx {
    const struct aio_spawn_args *args;
    const struct aio_join *join;
    struct aio_error *err;
    char *child_stack;
    int pidfd;
    long pid;
    int report_fd; /* a forked intermediate reports here (it cannot write to our memory), or -1 */
};

static const char *ns_name(int type)
{
    switch (type) {
    case CLONE_NEWUSER: return "user";
    case CLONE_NEWIPC: return "ipc";
    case CLONE_NEWUTS: return "uts";
    case CLONE_NEWNET: return "net";
    case CLONE_NEWPID: return "pid";
    case CLONE_NEWNS: return "mnt";
    case CLONE_NEWCGROUP: return "cgroup";
    case CLONE_NEWTIME: return "time";
    default: return "?";
    }
}

static int join_failed(struct exec_ctx *x, const char *step, const char *path, int err)
{
    x->err->kind = 'E';
    x->err->err = err;
    cstrlcpy(x->err->step, step, sizeof(x->err->step));
    cstrlcpy(x->err->path, path, sizeof(x->err->path));
    return 1;
}

static int exec_child(void *arg)
{
    struct exec_ctx *x = arg;
    child_main(x->args, x->join->init ? NULL : x->join);
    return AIO_EXIT_SETUP_FAILED;
}

#define EXEC_STACK (64 << 10)   /* the intermediate's */
#define CHILD_STACK (512 << 10) /* the process's, until execve: child_main wants ~150 KiB */

#if defined(__x86_64__) || defined(__aarch64__)
/* clone3() that runs fn(arg) in the child on the stack the args give, as glibc's internal
 * __clone3 does (glibc exports no clone3): a raw clone3 with CLONE_VM would return into the
 * caller's frames on the new stack. Returns the child's pid or -errno. */
__attribute__((visibility("hidden"))) long aio_clone3_call(struct clone_args *args, size_t size, int (*fn)(void *),
                                                         void *arg);
#define STR_(x) #x
#define STR(x) STR_(x)
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl aio_clone3_call\n"
        ".hidden aio_clone3_call\n"
        ".type aio_clone3_call,@function\n"
        "aio_clone3_call:\n"
        "    mov %rdx, %r9\n" /* fn and arg in registers the syscall keeps */
        "    mov %rcx, %r8\n"
        "    mov $" STR(SYS_clone3) ", %eax\n"
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jz 1f\n"
        "    ret\n"
        "1:  xor %ebp, %ebp\n"
        "    and $-16, %rsp\n"
        "    mov %r8, %rdi\n"
        "    call *%r9\n"
        "    mov %eax, %edi\n"
        "    mov $" STR(SYS_exit) ", %eax\n"
        "    syscall\n"
        "    hlt\n"
        ".size aio_clone3_call, .-aio_clone3_call\n");
#else
__asm__(".text\n"
        ".globl aio_clone3_call\n"
        ".hidden aio_clone3_call\n"
        ".type aio_clone3_call,%function\n"
        "aio_clone3_call:\n"
        "    mov x8, #" STR(SYS_clone3) "\n"
        "    svc #0\n"
        "    cbz x0, 1f\n"
        "    ret\n"
        "1:  mov x29, #0\n"
        "    mov x0, x3\n"
        "    blr x2\n"
        "    mov x8, #" STR(SYS_exit) "\n"
        "    svc #0\n"
        "    brk #0\n"
        ".size aio_clone3_call, .-aio_clone3_call\n");
#endif
#define SHARES_MEMORY 1
#else
#define SHARES_MEMORY 0
#endif

/* setns into every namespace as runc does: all but the user namespace first, putting off
 * those that refuse us (EPERM: owned by the user namespace, joinable from inside only), then
 * the user namespace, then those put off. Our ids stay the host's, against which the cgroup2
 * placement of the clone is checked (an init becomes root of a joined user namespace at its
 * WAIT_MAPS record). */
static int join_namespaces(struct exec_ctx *x, const struct aio_join *j)
{
    uint64_t joined = 0;
    for (int pass = 0; pass < 3; pass++) {
        for (int i = 0; i < j->n_ns && i < 64; i++) {
            int user = j->ns_types[i] == CLONE_NEWUSER;
            if ((joined >> i & 1) || user != (pass == 1))
                continue;
            if (setns(j->ns_fds[i], j->ns_types[i]) < 0) {
                if (errno == EPERM && pass == 0)
                    continue;
                return join_failed(x, "setns", ns_name(j->ns_types[i]), errno);
            }
            joined |= 1ULL << i;
        }
    }
    return 0;
}

/* A new time namespace for our children, with its offsets written before anyone is in it
 * (the kernel refuses them after). The file is opened first, from our own /proc: a mount
 * namespace joined since may show another. */
static int new_time_ns(struct exec_ctx *x, int offsets_fd)
{
    const char *offsets = x->join->time_offsets;
    if (unshare(CLONE_NEWTIME) < 0)
        return join_failed(x, "unshare", "time namespace", errno);
    size_t n = cstrlen(offsets);
    if (n && write(offsets_fd, offsets, n) != (ssize_t)n)
        return join_failed(x, "write", "/proc/self/timens_offsets", errno);
    return 0;
}

/* The intermediate. It runs vfork-style (the caller's memory and fd table, the caller's
 * thread suspended, all signals blocked) so it costs no copy of the caller, and has nothing
 * to report but through ``x``; forked only where the kernel wants a process of its own
 * (setns into a time namespace), then it reports through ``x->report_fd``. It enters the
 * namespaces (see join_namespaces) and, for an exec, the init's root, and clones the
 * process with CLONE_PARENT, so that the process is the caller's child (pidfd, reaped by
 * the caller) in the container's pid namespace, straight into the container's cgroup2
 * cgroup. An init is forked with the plan's clone flags (the namespaces it makes). An
 * exec'd process runs vfork-style too where the architecture allows (x86-64, arm64): its
 * setup waits on nothing unbounded (see join_rest), so the caller is suspended for a
 * fraction of a millisecond, until the process execs, as posix_spawn does; elsewhere it is
 * a plain fork of the caller. */
static int exec_intermediate(struct exec_ctx *x)
{
    const struct aio_join *j = x->join;
    int offsets_fd = -1;
    if (j->time_offsets && (offsets_fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC)) < 0)
        return join_failed(x, "open", "/proc/self/timens_offsets", errno);
    int failed = join_namespaces(x, j) || (j->time_offsets && new_time_ns(x, offsets_fd));
    if (offsets_fd >= 0)
        close(offsets_fd);
    if (failed)
        return 1;
    /* the init's root, not the mount namespace's: they differ after --no-pivot's chroot */
    if (j->root_fd >= 0 && (fchdir(j->root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0))
        return join_failed(x, "chroot", "container root", errno);
    struct clone_args ca;
    memset(&ca, 0, sizeof(ca));
    ca.flags = CLONE_PARENT | CLONE_PIDFD; /* exit signal: ours, SIGCHLD */
    ca.pidfd = (uint64_t)(uintptr_t)&x->pidfd;
    if (j->cgroup2_fd >= 0) {
        ca.flags |= CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)j->cgroup2_fd;
    }
    long pid;
#if SHARES_MEMORY
    if (!j->init) {
        ca.flags |= CLONE_VM | CLONE_VFORK;
        ca.stack = (uint64_t)(uintptr_t)x->child_stack;
        ca.stack_size = CHILD_STACK;
        pid = aio_clone3_call(&ca, sizeof(ca), exec_child, x);
        if (pid < 0) {
            errno = (int)-pid;
            pid = -1;
        }
        goto cloned;
    }
#endif
    ca.flags |= j->init ? x->args->clone_flags : 0;
    pid = syscall(SYS_clone3, &ca, sizeof(ca));
    if (pid == 0)
        _exit(exec_child(x));
#if SHARES_MEMORY
cloned:
#endif
    if (pid < 0)
        return join_failed(x, "clone3", "", errno);
    x->pid = pid;
    return 0;
}

/* What a forked intermediate tells the caller. */
struct exec_report {
    long pid;
    int pidfd;
    struct aio_error err;
};

static int intermediate_main(void *arg)
{
    struct exec_ctx *x = arg;
    int rc = exec_intermediate(x);
    if (x->report_fd >= 0) {
        struct exec_report rep;
        rep.pid = x->pid;
        rep.pidfd = x->pidfd;
        rep.err = *x->err;
        if (write(x->report_fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
            rc = 1;
    }
    return rc;
}

/* Our memory is an exec'd process's until it execs: nobody in the container may ptrace it
 * meanwhile (a non-dumpable mm needs CAP_SYS_PTRACE in our user namespace). Counted, for
 * threads that exec at the same time: the first makes us non-dumpable, the last restores. */
static pthread_mutex_t sharing_lock = PTHREAD_MUTEX_INITIALIZER;
static int sharing, dumpable_before;

static void sharing_begins(void)
{
    pthread_mutex_lock(&sharing_lock);
    if (sharing++ == 0) {
        dumpable_before = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    pthread_mutex_unlock(&sharing_lock);
}

static void sharing_ends(void)
{
    pthread_mutex_lock(&sharing_lock);
    if (--sharing == 0 && dumpable_before > 0)
        prctl(PR_SET_DUMPABLE, dumpable_before, 0, 0, 0);
    pthread_mutex_unlock(&sharing_lock);
}

/* A time namespace can be entered only by a process that shares its memory with no other. */
static int joins_time(const struct aio_join *j)
{
    for (int i = 0; i < j->n_ns; i++)
        if (j->ns_types[i] == CLONE_NEWTIME)
            return 1;
    return 0;
}

int aio_exec(const struct aio_spawn_args *args, const struct aio_join *join, int *pidfd_out, struct aio_error *err)
{
    struct exec_ctx x = {args, join, err, NULL, -1, 0, -1};
    int report[2] = {-1, -1};
    sigset_t all, old;
    siginfo_t si;
    memset(err, 0, sizeof(*err));
    int forked = joins_time(join);
    if (forked && pipe2(report, O_CLOEXEC) < 0) {
        join_failed(&x, "pipe", "", errno);
        return -1;
    }
    x.report_fd = report[1];
    char *stack = mmap(NULL, EXEC_STACK + CHILD_STACK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (stack == MAP_FAILED) {
        join_failed(&x, "mmap", "", errno);
        stack = NULL;
        goto out;
    }
    x.child_stack = stack + EXEC_STACK;
    sharing_begins();
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* an init is forked from the intermediate and goes on on (a copy of) its stack: all of it */
    char *top = stack + EXEC_STACK + (join->init ? CHILD_STACK : 0);
    int apid = clone(intermediate_main, top, CLONE_FILES | SIGCHLD | (forked ? 0 : CLONE_VM | CLONE_VFORK), &x);
    int cerr = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    sharing_ends();
    if (apid < 0) {
        join_failed(&x, "clone", "", cerr);
    } else {
        /* it has released our memory (or exited, if forked): only the last steps of its exit remain */
        while (waitid(P_PID, (id_t)apid, &si, WEXITED) < 0 && errno == EINTR)
            ;
        struct exec_report rep;
        if (forked && read(report[0], &rep, sizeof(rep)) == (ssize_t)sizeof(rep)) {
            x.pid = rep.pid;
            x.pidfd = rep.pidfd;
            *err = rep.err;
        }
        if (!x.pid && !err->kind)
            join_failed(&x, "intermediate", "", ECHILD); /* killed before it could clone */
    }
out:
    if (stack)
        munmap(stack, EXEC_STACK + CHILD_STACK);
    if (forked) {
        close(report[0]);
        close(report[1]);
    }
    if (!x.pid)
        return -1;
    *pidfd_out = x.pidfd;
    return (int)x.pid;
}

long aio_recv(int sock, void *buf, size_t len, int *fd_out)
{
    struct iovec iov = {buf, len};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * 4)];
    } u;
    struct msghdr m;
    memset(&m, 0, sizeof(m));
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof(u.buf);
    *fd_out = -1;
    ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return -errno;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (*fd_out < 0)
                *fd_out = fd;
            else
                close(fd); /* one fd per message is all we expect */
        }
    }
    return n;
}

int aio_unix_connect(const char *path)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    if (cstrlen(path) >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    cstrlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int aio_send_fd(int sock, int fd, const char *name)
{
    return send_msg(sock, name, cstrlen(name), &fd, fd >= 0) < 0 ? -errno : 0;
}
