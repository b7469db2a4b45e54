"""cffi (API mode) bindings to libseccomp, built as aioruntime._seccomp; run by setuptools.

Only what turns an OCI profile into BPF is bound: the filter is exported here, in the
parent, and loaded by the compiled init (``_clone.c``), which runs no library code.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
typedef void *scmp_filter_ctx;
typedef uint64_t scmp_datum_t;
enum scmp_compare { SCMP_CMP_NE = 1, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ, ... };
struct scmp_arg_cmp { unsigned int arg; enum scmp_compare op; scmp_datum_t datum_a; scmp_datum_t datum_b; };
struct scmp_version { unsigned int major; unsigned int minor; unsigned int micro; };
const struct scmp_version *seccomp_version(void);
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
uint32_t seccomp_arch_resolve_name(const char *arch_name);
int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);
int seccomp_syscall_resolve_name(const char *name);
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall, unsigned int arg_cnt,
                           const struct scmp_arg_cmp *arg_array);
int seccomp_export_bpf(const scmp_filter_ctx ctx, int fd);
"""
)
ffibuilder.set_source("aioruntime._seccomp", "#include <seccomp.h>", libraries=["seccomp"])
