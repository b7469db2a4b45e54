/* cgroup2 has no devices.allow/deny files: device access is decided by eBPF programs of
 * type BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup. Python builds the program
 * (aioruntime/cgroups/devices.py); this loads it and makes it the cgroup's only one.
 *
 * Programs are attached with BPF_F_ALLOW_MULTI, so a replacement is attached before the
 * old ones are detached: in between a device is allowed only if both allow it, so an
 * update never opens access that neither the old nor the new rules grant. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "_bpf.h"

#define MAX_PROGS 64

static int bpf(int cmd, union bpf_attr *attr)
{
    return (int)syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

/* The ids of the device programs attached to the cgroup itself; their count or -errno. */
static int query(int cgroup_fd, uint32_t ids[MAX_PROGS])
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.query.target_fd = (uint32_t)cgroup_fd;
    attr.query.attach_type = BPF_CGROUP_DEVICE;
    attr.query.prog_ids = (uint64_t)(uintptr_t)ids;
    attr.query.prog_cnt = MAX_PROGS;
    if (bpf(BPF_PROG_QUERY, &attr) < 0)
        return -errno;
    return (int)attr.query.prog_cnt;
}

static int detach_ids(int cgroup_fd, const uint32_t *ids, int n)
{
    for (int i = 0; i < n; i++) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.prog_id = ids[i];
        int fd = bpf(BPF_PROG_GET_FD_BY_ID, &attr);
        if (fd < 0) {
            if (errno == ENOENT)
                continue; /* gone meanwhile */
            return -errno;
        }
        memset(&attr, 0, sizeof(attr));
        attr.target_fd = (uint32_t)cgroup_fd;
        attr.attach_bpf_fd = (uint32_t)fd;
        attr.attach_type = BPF_CGROUP_DEVICE;
        int rc = bpf(BPF_PROG_DETACH, &attr);
        int err = errno;
        close(fd);
        if (rc < 0 && err != ENOENT)
            return -err;
    }
    return 0;
}

static int load(const void *insns, unsigned int insn_cnt, char *log, unsigned int log_size)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = insn_cnt;
    attr.license = (uint64_t)(uintptr_t)"Apache";
    int fd = bpf(BPF_PROG_LOAD, &attr);
    if (fd >= 0 || log == NULL || log_size == 0)
        return fd < 0 ? -errno : fd;
    int err = errno;
    /* again, with the verifier's log, to say why */
    attr.log_level = 1;
    attr.log_buf = (uint64_t)(uintptr_t)log;
    attr.log_size = log_size;
    log[0] = '\0';
    fd = bpf(BPF_PROG_LOAD, &attr);
    if (fd >= 0)
        return fd;
    return -err;
}

int aio_bpf_devices_attach(int cgroup_fd, const void *insns, unsigned int insn_cnt, char *log, unsigned int log_size)
{
    uint32_t old[MAX_PROGS];
    int n = query(cgroup_fd, old);
    if (n < 0)
        return n;
    int prog = load(insns, insn_cnt, log, log_size);
    if (prog < 0)
        return prog;
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.target_fd = (uint32_t)cgroup_fd;
    attr.attach_bpf_fd = (uint32_t)prog;
    attr.attach_type = BPF_CGROUP_DEVICE;
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    int rc = bpf(BPF_PROG_ATTACH, &attr);
    int err = errno;
    close(prog); /* the attachment holds the program */
    if (rc < 0)
        return -err;
    return detach_ids(cgroup_fd, old, n < MAX_PROGS ? n : MAX_PROGS);
}

int aio_bpf_devices_detach(int cgroup_fd)
{
    uint32_t old[MAX_PROGS];
    int n = query(cgroup_fd, old);
    if (n < 0)
        return n;
    return detach_ids(cgroup_fd, old, n < MAX_PROGS ? n : MAX_PROGS);
}

int aio_bpf_devices_count(int cgroup_fd)
{
    uint32_t ids[MAX_PROGS];
    return query(cgroup_fd, ids);
}
