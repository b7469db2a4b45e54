/* cgroup2 device access: load a BPF_PROG_TYPE_CGROUP_DEVICE program and attach it. */
#ifndef AIO_BPF_H
#define AIO_BPF_H

int aio_bpf_devices_attach(int cgroup_fd, const void *insns, unsigned int insn_cnt, char *log, unsigned int log_size);
int aio_bpf_devices_detach(int cgroup_fd);
int aio_bpf_devices_count(int cgroup_fd);

#endif
