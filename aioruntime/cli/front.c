/* The aioruntime command's front end: `state`, `start`, `kill` and `delete` in C, the rest
 * (and every case this file does not handle) by exec'ing the Python CLI.
 *
 * A container manager calls the runtime 3-4 times per container, mostly for these four
 * commands, and Python alone needs ~6 ms to start here against runc's ~3 ms for a whole
 * `runc state`.  So the common success path of those commands is done here, over the same
 * state.json the Python core writes, and everything else falls through to Python *before
 * any side effect*: unknown or unusual flags, a container not found or in the wrong
 * status (Python words the error), hooks to run, networks to release, `kill --all`.
 * The logic mirrors aioruntime/ops/lifecycle.py and aioruntime/status.py.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef AIORUNTIME_PYTHON
#error "build with -DAIORUNTIME_PYTHON=\"/path/to/python\" (setup.py does)"
#endif

static char **g_argv;

/* ---- fall back to the Python CLI: same arguments, nothing done yet ---- */

static void python(void) __attribute__((noreturn));
static void python(void)
{
    int n = 0;
    while (g_argv[n])
        n++;
    char **args = calloc((size_t)n + 3, sizeof *args);
    if (args == NULL)
        _exit(1);
    args[0] = AIORUNTIME_PYTHON;
    args[1] = "-c";
    args[2] = "from aioruntime.cli.main import main; main()";
    for (int i = 1; i < n; i++)
        args[i + 2] = g_argv[i];
    execv(AIORUNTIME_PYTHON, args);
    fprintf(stderr, "aioruntime: cannot run %s: %s\n", AIORUNTIME_PYTHON, strerror(errno));
    _exit(1);
}

/* ---- errors after a side effect (Python would word them the same) ---- */

static const char *g_log, *g_log_format = "text";

static void put_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static int fail(const char *msg)
{
    char stamp[32];
    time_t now = time(NULL);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    FILE *out = g_log ? fopen(g_log, "a") : stderr;
    if (out == NULL)
        out = stderr;
    if (strcmp(g_log_format, "json") == 0) {
        fputs("{\"level\":\"error\",\"msg\":", out);
        put_json_string(out, msg);
        fprintf(out, ",\"time\":\"%s\"}\n", stamp);
    } else {
        fprintf(out, "time=\"%s\" level=error msg=", stamp);
        put_json_string(out, msg);
        fputc('\n', out);
    }
    if (out != stderr) {
        fclose(out);
        fprintf(stderr, "%s\n", msg);
    }
    return 1;
}

/* ---- just enough JSON for state.json (written by Python's json.dumps) ---- */

static const char *ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

/* The end of the value at p, or NULL when it is malformed. */
static const char *skip(const char *p)
{
    p = ws(p);
    if (*p == '"') {
        for (p++; *p != '"'; p++) {
            if (*p == '\0')
                return NULL;
            if (*p == '\\' && *++p == '\0')
                return NULL;
        }
        return p + 1;
    }
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                if ((p = skip(p)) == NULL)
                    return NULL;
                p = ws(p);
                if (*p++ != ':')
                    return NULL;
            }
            if ((p = skip(p)) == NULL)
                return NULL;
            p = ws(p);
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
        }
    }
    if (*p == '\0')
        return NULL;
    while (*p && strchr(",}] \n\t\r", *p) == NULL)
        p++;
    return p;
}

/* The value of `key` in the object at obj, or NULL. Keys are compared raw (no escapes). */
static const char *member(const char *obj, const char *key)
{
    size_t n = strlen(key);
    const char *p = ws(obj);
    if (p == NULL || *p != '{')
        return NULL;
    p = ws(p + 1);
    while (*p == '"') {
        const char *k = p + 1, *end = skip(p);
        if (end == NULL)
            return NULL;
        p = ws(end);
        if (*p++ != ':')
            return NULL;
        p = ws(p);
        if ((size_t)(end - 1 - k) == n && memcmp(k, key, n) == 0)
            return p;
        if ((p = skip(p)) == NULL)
            return NULL;
        p = ws(p);
        if (*p == ',')
            p = ws(p + 1);
    }
    return NULL;
}

/* Copy the string at p into out; 0 unless it is not a plain string (escapes: fall back). */
static int string(const char *p, char *out, size_t size)
{
    if (p == NULL || *p != '"')
        return -1;
    const char *end = strchr(p + 1, '"');
    if (end == NULL || memchr(p + 1, '\\', (size_t)(end - p - 1)) || (size_t)(end - p - 1) >= size)
        return -1;
    memcpy(out, p + 1, (size_t)(end - p - 1));
    out[end - p - 1] = '\0';
    return 0;
}

static long long number(const char *p)
{
    return p ? strtoll(p, NULL, 10) : -1;
}

/* ---- the container ---- */

struct container {
    char dir[PATH_MAX];
    char *json; /* state.json */
    int lock;   /* flock'ed directory fd, or -1 */
    long long pid, pid_start;
};

static int container_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 1024 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0 || id[0] == '.')
        return 0;
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("_+-.", *c)))
            return 0;
    return 1;
}

static char *slurp(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) == 0 && (buf = malloc((size_t)st.st_size + 1)) != NULL) {
        ssize_t n = read(fd, buf, (size_t)st.st_size);
        if (n != st.st_size) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
        }
    }
    close(fd);
    return buf;
}

/* Load <root>/<id>/state.json (locked when `lock`); fall back to Python on anything odd. */
static void load(struct container *c, const char *root, const char *id, int lock)
{
    if (!container_id_ok(id) || snprintf(c->dir, sizeof c->dir, "%s/%s", root, id) >= (int)sizeof c->dir)
        python();
    c->lock = -1;
    if (lock) {
        c->lock = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->lock < 0 || flock(c->lock, LOCK_EX) < 0)
            python();
    }
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/state.json", c->dir);
    if ((c->json = slurp(path)) == NULL || skip(c->json) == NULL)
        python();
    c->pid = number(member(c->json, "pid"));
    c->pid_start = number(member(c->json, "pid_start"));
    if (c->pid <= 0)
        python(); /* creating: rare, and Python words it */
}

/* Field 22 of /proc/PID/stat, or -1 when the pid is gone or a zombie. */
static long long start_time(long long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%lld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] == '\0' || p[2] == 'Z' || p[2] == 'X')
        return -1;
    p += 2;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return -1;
        p++;
    }
    return strtoll(p, NULL, 10);
}

/* The container's cgroup directories, in state.json's order (each NUL-terminated). */
static int cgroup_dirs(const struct container *c, const char *key, char dirs[][PATH_MAX], int max)
{
    const char *p = member(c->json, key);
    int n = 0;
    if (p == NULL || (*p != '{' && *p != '['))
        python();
    int object = *p == '{';
    p = ws(p + 1);
    while (*p == '"' && n < max) {
        if (object) {
            p = skip(p);
            if (p == NULL || *(p = ws(p)) != ':')
                python();
            p = ws(p + 1);
        }
        if (string(p, dirs[n++], PATH_MAX) < 0)
            python();
        p = ws(skip(p));
        if (*p == ',')
            p = ws(p + 1);
    }
    if (*p == '"')
        python(); /* more than we handle */
    return n;
}

static int read_small(const char *dir, const char *name, char *buf, size_t size)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return 0;
}

static int write_small(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n < 0 ? -1 : 0;
}

#define MAX_DIRS 32
enum freezer { THAWED, FREEZING, FROZEN };

/* As cgroups.freezer.state: a v1 freezer.state where one of the dirs has it, else cgroup v2's
 * cgroup.events/cgroup.freeze; THAWED without a freezer. `where` gets the directory. */
static enum freezer freezer(const struct container *c, char *where)
{
    static char dirs[MAX_DIRS][PATH_MAX];
    char buf[256];
    int n = cgroup_dirs(c, "cgroup_paths", dirs, MAX_DIRS);
    for (int i = 0; i < n; i++)
        if (read_small(dirs[i], "freezer.state", buf, sizeof buf) == 0) {
            strcpy(where, dirs[i]);
            return strncmp(buf, "FROZEN", 6) == 0 ? FROZEN : strncmp(buf, "FREEZING", 8) == 0 ? FREEZING : THAWED;
        }
    for (int i = 0; i < n; i++)
        if (read_small(dirs[i], "cgroup.events", buf, sizeof buf) == 0) {
            strcpy(where, dirs[i]);
            if (strstr(buf, "frozen 1"))
                return FROZEN;
            return read_small(dirs[i], "cgroup.freeze", buf, sizeof buf) == 0 && buf[0] == '1' ? FREEZING : THAWED;
        }
    where[0] = '\0';
    return THAWED;
}

static void thaw(const struct container *c)
{
    char where[PATH_MAX];
    enum freezer f = freezer(c, where);
    if (f != THAWED && write_small(where, "freezer.state", "THAWED") < 0)
        write_small(where, "cgroup.freeze", "0");
}

static const char *status(const struct container *c)
{
    char fifo[PATH_MAX + 16], where[PATH_MAX];
    if (start_time(c->pid) != c->pid_start)
        return "stopped";
    switch (freezer(c, where)) {
    case FROZEN:
        return "paused";
    case FREEZING:
        return "pausing";
    default:
        break;
    }
    snprintf(fifo, sizeof fifo, "%s/exec.fifo", c->dir);
    return access(fifo, F_OK) == 0 ? "created" : "running";
}

/* A pidfd on the init if it is still the process we started, else -1. */
static int init_pidfd(const struct container *c)
{
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)c->pid, 0);
    if (fd >= 0 && start_time(c->pid) != c->pid_start) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Hooks to run (poststart, poststop): Python runs them. */
static int has_hooks(const struct container *c)
{
    const char *config = member(c->json, "config");
    const char *hooks = config ? member(config, "hooks") : NULL;
    return hooks != NULL && *hooks != 'n' && *ws(hooks + 1) != '}';
}

/* ---- the commands ---- */

static int cmd_state(const char *root, const char *id)
{
    struct container c;
    load(&c, root, id, 0);
    /* the raw JSON of each string field, checked before anything is printed */
    const char *names[] = {"bundle", "rootfs", "created", "owner"}, *values[4], *ends[4];
    for (int i = 0; i < 4; i++) {
        values[i] = member(c.json, names[i]);
        ends[i] = values[i] ? skip(values[i]) : NULL;
        if (ends[i] == NULL || *values[i] != '"')
            python();
    }
    const char *ann = member(c.json, "annotations");
    if (ann != NULL && *ann == '{' && *ws(ann + 1) != '}')
        python(); /* indenting nested JSON is Python's job */
    const char *st = status(&c);
    printf("{\n  \"ociVersion\": \"1.0.2-dev\",\n  \"id\": \"%s\",\n  \"pid\": %lld,\n  \"status\": \"%s\"", id,
           strcmp(st, "stopped") == 0 ? 0 : c.pid, st);
    for (int i = 0; i < 4; i++)
        printf(",\n  \"%s\": %.*s", names[i], (int)(ends[i] - values[i]), values[i]);
    fputs("\n}", stdout);
    return 0;
}

static int cmd_start(const char *root, const char *id)
{
    struct container c;
    char fifo_path[PATH_MAX + 16];
    load(&c, root, id, 1);
    if (strcmp(status(&c), "created") != 0 || has_hooks(&c))
        python();
    int pidfd = init_pidfd(&c);
    snprintf(fifo_path, sizeof fifo_path, "%s/exec.fifo", c.dir);
    int fifo = open(fifo_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (pidfd < 0 || fifo < 0)
        python();
    /* the init is blocked opening the fifo for writing: it writes one byte and execs, or
     * it died (pidfd readable): either ends this poll */
    struct pollfd fds[2] = {{.fd = fifo, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
    while (poll(fds, 2, -1) < 0)
        if (errno != EINTR)
            return fail(strerror(errno));
    char byte;
    if (read(fifo, &byte, 1) != 1) {
        char msg[1200];
        snprintf(msg, sizeof msg, "cannot start container %s: its init exited before start", id);
        return fail(msg);
    }
    unlink(fifo_path);
    /* the init holds the fifo open until its execve (close-on-exec): done at its EOF. What
     * it may write before that reports a startContainer hook, which we leave to Python. */
    ssize_t n;
    while ((n = read(fifo, &byte, 1)) != 0) {
        if (n > 0 || (errno != EAGAIN && errno != EINTR)) {
            char msg[1200];
            snprintf(msg, sizeof msg, "cannot start container %s: its init failed after start", id);
            return fail(msg);
        }
        poll(fds, 1, -1);
    }
    return 0;
}

/* Signal every pid in dir's cgroup.procs and below; the number found. */
static int signal_tree(const char *dir, int sig)
{
    char buf[65536];
    int found = 0;
    if (read_small(dir, "cgroup.procs", buf, sizeof buf) == 0)
        for (char *p = buf; *p;) {
            char *end;
            long pid = strtol(p, &end, 10);
            if (end == p)
                break;
            kill((pid_t)pid, sig);
            found++;
            p = end + (*end != '\0');
        }
    DIR *d = opendir(dir);
    if (d == NULL)
        return found;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_type == DT_DIR && e->d_name[0] != '.') {
            char sub[PATH_MAX];
            if (snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name) < (int)sizeof sub)
                found += signal_tree(sub, sig);
        }
    closedir(d);
    return found;
}

/* Signal the processes of the container's cgroup (read from the first hierarchy it is in,
 * as cgroups.paths.procs), `rounds` times or until none is left. */
static void signal_all(const struct container *c, int sig, int rounds)
{
    static char dirs[MAX_DIRS][PATH_MAX];
    int n = cgroup_dirs(c, "cgroup_paths", dirs, MAX_DIRS);
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(dirs[i], &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        for (int round = 0; round < rounds && signal_tree(dirs[i], sig) > 0; round++)
            ;
        return;
    }
}

/* As cgroups.paths.kill_all: cgroup.kill where cgroup2 has it, else kill until empty. */
static void kill_all(const struct container *c)
{
    static char dirs[MAX_DIRS][PATH_MAX];
    int n = cgroup_dirs(c, "cgroup_paths", dirs, MAX_DIRS);
    for (int i = 0; i < n; i++)
        if (write_small(dirs[i], "cgroup.kill", "1") == 0)
            return;
    signal_all(c, SIGKILL, 100); /* a process may fork while we kill: repeat until empty */
}


static const struct {
    const char *name;
    int number;
} SIGNALS[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ILL", SIGILL},     {"TRAP", SIGTRAP},
    {"ABRT", SIGABRT}, {"IOT", SIGIOT},   {"BUS", SIGBUS},   {"FPE", SIGFPE},     {"KILL", SIGKILL},
    {"USR1", SIGUSR1}, {"SEGV", SIGSEGV}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE},   {"ALRM", SIGALRM},
    {"TERM", SIGTERM}, {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CLD", SIGCHLD}, {"CONT", SIGCONT}, {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU}, {"URG", SIGURG},     {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"POLL", SIGPOLL}, {"PWR", SIGPWR},   {"SYS", SIGSYS},
};

/* A signal by number or name (any case, with or without SIG), as Python's _signal_number; -1 else. */
static int signal_number(const char *text)
{
    char *end;
    long n = strtol(text, &end, 10);
    if (*text >= '0' && *text <= '9')
        return *end == '\0' && n > 0 && n < 65 ? (int)n : -1;
    if (strncasecmp(text, "SIG", 3) == 0)
        text += 3;
    for (size_t i = 0; i < sizeof SIGNALS / sizeof *SIGNALS; i++)
        if (strcasecmp(text, SIGNALS[i].name) == 0)
            return SIGNALS[i].number;
    return -1;
}

static int cmd_kill(const char *root, const char *id, const char *sigtext, int all)
{
    struct container c;
    int sig = signal_number(sigtext ? sigtext : "SIGTERM");
    if (sig < 0)
        python();
    load(&c, root, id, 1);
    if (all) { /* whatever is left in the cgroup, in any status */
        signal_all(&c, sig, 1);
        if (sig == SIGKILL)
            thaw(&c);
        return 0;
    }
    const char *st = status(&c);
    if (strcmp(st, "created") != 0 && strcmp(st, "running") != 0 && strcmp(st, "paused") != 0)
        python();
    int pidfd = init_pidfd(&c);
    if (pidfd < 0)
        python();
    if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0)
        return fail(strerror(errno));
    /* a process frozen by the v1 freezer dies of SIGKILL only once thawed */
    if (sig == SIGKILL)
        thaw(&c);
    return 0;
}

static int depth(const char *path)
{
    int n = 0;
    for (; *path; path++)
        n += *path == '/';
    return n;
}

static int deeper_first(const void *a, const void *b)
{
    return depth((const char *)b) - depth((const char *)a);
}

static int cmd_delete(const char *root, const char *id, int force)
{
    struct container c;
    char path[PATH_MAX + 16];
    static char made[MAX_DIRS][PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", root, id);
    if (force && container_id_ok(id) && access(path, F_OK) < 0 && errno == ENOENT)
        return 0; /* as runc: containerd deletes --force after every delete */
    snprintf(path, sizeof path, "%s/.networks", root);
    if (access(path, F_OK) == 0)
        python(); /* addresses and links to give back */
    load(&c, root, id, 1);
    const char *st = status(&c);
    int n = cgroup_dirs(&c, "cgroups_made", made, MAX_DIRS);
    if (has_hooks(&c) || !(force || strcmp(st, "created") == 0 || strcmp(st, "stopped") == 0))
        python();
    if (strcmp(st, "stopped") != 0) {
        int pidfd = init_pidfd(&c);
        if (pidfd >= 0)
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        kill_all(&c);
        thaw(&c);
        if (pidfd >= 0) {
            struct pollfd p = {.fd = pidfd, .events = POLLIN};
            while (poll(&p, 1, -1) < 0 && errno == EINTR)
                ;
            close(pidfd);
        }
    }
    kill_all(&c); /* anything that slipped in meanwhile */
    qsort(made, (size_t)n, PATH_MAX, deeper_first);
    struct timespec pause = {0, 2000000}, now, deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 2;
    for (int i = 0; i < n; i++)
        while (rmdir(made[i]) < 0 && errno == EBUSY) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec && now.tv_nsec > deadline.tv_nsec))
                break; /* still used by another container or a process we did not make */
            nanosleep(&pause, NULL);
        }
    DIR *d = opendir(c.dir);
    if (d == NULL)
        return fail(strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
    if (rmdir(c.dir) < 0 && errno != ENOENT)
        return fail(strerror(errno));
    return 0;
}

/* ---- the command line: runc's global flags, then the command ---- */

static int flag(const char *word, const char *name, const char **value, int *i, int argc)
{
    const char *w = word[1] == '-' ? word + 2 : word + 1;
    size_t n = strlen(name);
    if (strncmp(w, name, n) != 0)
        return 0;
    if (w[n] == '=') {
        *value = w + n + 1;
        return 1;
    }
    if (w[n] != '\0')
        return 0;
    if (value == NULL)
        return 1;
    if (*i + 1 >= argc)
        python();
    *value = g_argv[++*i];
    return 1;
}

int main(int argc, char **argv)
{
    g_argv = argv;
    const char *root = NULL, *ignored;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *w = argv[i];
        if (!(flag(w, "root", &root, &i, argc) || flag(w, "log", &g_log, &i, argc) ||
              flag(w, "log-format", &g_log_format, &i, argc) || flag(w, "criu", &ignored, &i, argc) ||
              flag(w, "rootless", &ignored, &i, argc) || strcmp(w, "--debug") == 0 ||
              strcmp(w, "--systemd-cgroup") == 0))
            python();
    }
    if (i >= argc || (strcmp(g_log_format, "text") != 0 && strcmp(g_log_format, "json") != 0))
        python();
    char fallback[PATH_MAX];
    if (root == NULL) {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (geteuid() != 0 && xdg && *xdg && snprintf(fallback, sizeof fallback, "%s/aioruntime", xdg) < PATH_MAX)
            root = fallback;
        else
            root = "/run/aioruntime";
    }
    char abs_root[PATH_MAX];
    if (root[0] != '/') {
        if (getcwd(abs_root, sizeof abs_root) == NULL)
            python();
        size_t len = strlen(abs_root);
        if (snprintf(abs_root + len, sizeof abs_root - len, "/%s", root) >= (int)(sizeof abs_root - len))
            python();
        root = abs_root;
    }
    const char *cmd = argv[i++];
    int force = 0, all = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *w = argv[i];
        if (strcmp(cmd, "delete") == 0 && (strcmp(w, "--force") == 0 || strcmp(w, "-f") == 0))
            force = 1;
        else if (strcmp(cmd, "kill") == 0 && (strcmp(w, "--all") == 0 || strcmp(w, "-a") == 0))
            all = 1;
        else
            python(); /* --help, ... */
    }
    int rest = argc - i;
    const char *id = i < argc ? argv[i] : NULL;
    if (id == NULL)
        python();
    if (strcmp(cmd, "state") == 0 && rest == 1)
        return cmd_state(root, id);
    if (strcmp(cmd, "start") == 0 && rest == 1)
        return cmd_start(root, id);
    if (strcmp(cmd, "kill") == 0 && (rest == 1 || rest == 2))
        return cmd_kill(root, id, rest == 2 ? argv[i + 1] : NULL, all);
    if (strcmp(cmd, "delete") == 0 && rest == 1)
        return cmd_delete(root, id, force);
    python();
}
