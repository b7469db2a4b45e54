/* The aioruntime command's front end: `state`, `start`, `kill`, `delete`, `pause`, `resume`
 * and `list` in C, the rest (and every case this file does not handle) by exec'ing the
 * Python CLI.
 *
 * A container manager calls the runtime 3-4 times per container, mostly for these
 * commands, and Python alone needs ~6 ms to start here against runc's ~3 ms for a whole
 * `runc state`.  So the common success path of those commands is done here, over the same
 * state.json the Python core writes, and everything else falls through to Python *before
 * any side effect*: unknown or unusual flags, a container not found or in the wrong
 * status (Python words the error), hooks to run, networks to release, a container
 * whose state `list` would print nested.
 * The logic mirrors aioruntime/ops/lifecycle.py, aioruntime/ops/freeze.py,
 * aioruntime/cgroups/freezer.py, aioruntime/status.py and cli/main.py's cmd_list.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
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

/* Whether mountinfo's super options `opts` (comma-separated) hold `word`. */
static int has_option(const char *opts, size_t len, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = opts, *end = opts + len; p < end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t k = comma ? (size_t)(comma - p) : (size_t)(end - p);
        if (k == n && memcmp(p, word, n) == 0)
            return 1;
        p += k + 1;
    }
    return 0;
}

/* As cgroups.placement.locate for the freezer: its mount, the first v1 hierarchy mounted
 * with it, else cgroup2 (built in there), read from mountinfo as cgroups.mounts does, then
 * the container's directory under that mount from state.json's cgroup_paths. The version
 * (1 or 2), or 0 when the container has none; Python handles escaped mountpoints. */
static int freezer_place(const struct container *c, char *dir)
{
    char *info = NULL, v1[PATH_MAX] = "", v2[PATH_MAX] = "";
    size_t cap = 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        python();
    while (getline(&info, &cap, f) > 0 && v1[0] == '\0') {
        char *sep = strstr(info, " - "), *fields[5], *save = NULL;
        if (sep == NULL)
            continue;
        *sep = '\0';
        int n = 0;
        for (char *w = strtok_r(info, " ", &save); w && n < 5; w = strtok_r(NULL, " ", &save))
            fields[n++] = w;
        char type[16], opts[512];
        if (n < 5 || sscanf(sep + 3, "%15s %*s %511s", type, opts) != 2)
            continue;
        int cgroup2 = strcmp(type, "cgroup2") == 0;
        if (!cgroup2 && !(strcmp(type, "cgroup") == 0 && has_option(opts, strlen(opts), "freezer")))
            continue;
        if (strchr(fields[4], '\\') || strlen(fields[4]) >= PATH_MAX)
            python();
        if (!cgroup2)
            strcpy(v1, fields[4]);
        else if (v2[0] == '\0')
            strcpy(v2, fields[4]);
    }
    free(info);
    fclose(f);
    const char *mount = v1[0] ? v1 : v2[0] ? v2 : NULL;
    const char *paths = member(c->json, "cgroup_paths");
    const char *where = mount && paths ? member(paths, mount) : NULL;
    if (where == NULL)
        return 0;
    if (string(where, dir, PATH_MAX) < 0)
        python();
    return v1[0] ? 1 : 2;
}

/* As cgroups.freezer.state: THAWED without a freezer (or its directory gone). `where` and
 * `version` get the freezer's directory and cgroup version (freezer_place). */
static enum freezer freezer(const struct container *c, char *where, int *version)
{
    char buf[256];
    *version = freezer_place(c, where);
    if (*version == 1) {
        if (read_small(where, "freezer.state", buf, sizeof buf) < 0)
            return THAWED;
        return strncmp(buf, "FROZEN", 6) == 0 ? FROZEN : strncmp(buf, "FREEZING", 8) == 0 ? FREEZING : THAWED;
    }
    if (*version == 0 || read_small(where, "cgroup.events", buf, sizeof buf) < 0)
        return THAWED;
    if (strstr(buf, "frozen 1"))
        return FROZEN;
    return read_small(where, "cgroup.freeze", buf, sizeof buf) == 0 && buf[0] == '1' ? FREEZING : THAWED;
}

static int set_freezer(const char *dir, int version, int frozen, char *msg, size_t size);

static void thaw(const struct container *c)
{
    char where[PATH_MAX], msg[PATH_MAX + 128];
    int version;
    if (freezer(c, where, &version) != THAWED)
        set_freezer(where, version, 0, msg, sizeof msg);
}

static const char *status(const struct container *c)
{
    char fifo[PATH_MAX + 16], where[PATH_MAX];
    int version;
    if (start_time(c->pid) != c->pid_start)
        return "stopped";
    switch (freezer(c, where, &version)) {
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

struct pids {
    long *v;
    int n, cap;
};

/* Append the pids in dir's cgroup.procs and below. */
static void collect(const char *dir, struct pids *out)
{
    char buf[65536];
    if (read_small(dir, "cgroup.procs", buf, sizeof buf) == 0)
        for (char *p = buf; *p;) {
            char *end;
            long pid = strtol(p, &end, 10);
            if (end == p)
                break;
            if (out->n == out->cap && (out->v = realloc(out->v, (size_t)(out->cap = out->cap * 2 + 64) * sizeof *out->v)) == NULL)
                _exit(1);
            out->v[out->n++] = pid;
            p = end + (*end != '\0');
        }
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_type == DT_DIR && e->d_name[0] != '.') {
            char sub[PATH_MAX];
            if (snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name) < (int)sizeof sub)
                collect(sub, out);
        }
    closedir(d);
}

/* The processes of the container's cgroup, read from the first hierarchy it is in (as
 * cgroups.paths.procs; unsorted, a pid may repeat). */
static void procs(const struct container *c, struct pids *out)
{
    static char dirs[MAX_DIRS][PATH_MAX];
    int n = cgroup_dirs(c, "cgroup_paths", dirs, MAX_DIRS);
    out->n = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(dirs[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            collect(dirs[i], out);
            return;
        }
    }
}

/* Signal the processes of the container's cgroup, `rounds` times or until none is left. */
static void signal_all(const struct container *c, int sig, int rounds)
{
    struct pids found = {0};
    for (int round = 0; round < rounds; round++) {
        procs(c, &found);
        if (found.n == 0)
            break;
        for (int i = 0; i < found.n; i++)
            kill((pid_t)found.v[i], sig);
    }
    free(found.v);
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
    const char *st = status(&c); /* also finds the freezer: any fallback comes before a signal */
    if (all) { /* whatever is left in the cgroup, in any status */
        signal_all(&c, sig, 1);
        if (sig == SIGKILL)
            thaw(&c);
        return 0;
    }
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

/* ---- pause and resume (as ops/freeze.py and cgroups/freezer.py) ---- */

#define FREEZE_DEADLINE 5 /* seconds, as freezer.DEADLINE */

/* Set the freezer at dir to frozen or thawed (freezer._set); on failure -1 and, in msg,
 * what Python's OSError would say: the path when the open failed, errno's words else. */
static int set_freezer(const char *dir, int version, int frozen, char *msg, size_t size)
{
    char path[PATH_MAX + 32];
    const char *text = version == 1 ? (frozen ? "FROZEN" : "THAWED") : (frozen ? "1" : "0");
    snprintf(path, sizeof path, "%s/%s", dir, version == 1 ? "freezer.state" : "cgroup.freeze");
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, size, "%s: %s", path, strerror(errno));
        return -1;
    }
    ssize_t n = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    if (n < 0) {
        snprintf(msg, size, "[Errno %d] %s", saved, strerror(saved));
        return -1;
    }
    return 0;
}

/* freezer.state() == FROZEN: v1's freezer.state, cgroup2's `frozen 1` in cgroup.events. */
static int frozen(const char *dir, int version)
{
    char buf[256];
    if (version == 1)
        return read_small(dir, "freezer.state", buf, sizeof buf) == 0 && strncmp(buf, "FROZEN", 6) == 0;
    return read_small(dir, "cgroup.events", buf, sizeof buf) == 0 && strstr(buf, "frozen 1") != NULL;
}

/* Event watchers in any process learn the status changed by an IN_ATTRIB on the state
 * directory (freeze._touch): cgroup v1 has no notification of its own. */
static void touch(const struct container *c)
{
    utimensat(AT_FDCWD, c->dir, NULL, 0);
}

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Lock and load the container for pause or resume (the two statuses status.ALLOWED gives
 * each); its freezer's version and directory. Python words a refusal or a missing freezer. */
static int locked_freezer(struct container *c, const char *root, const char *id, const char *one,
                          const char *other, char *dir)
{
    load(c, root, id, 1);
    const char *st = status(c);
    int version = freezer_place(c, dir);
    if ((strcmp(st, one) != 0 && strcmp(st, other) != 0) || version == 0)
        python();
    return version;
}

/* Freeze until every process is: cgroup2 says so through cgroup.events (inotify); v1
 * reads FREEZING meanwhile and a task forked since may need the write again, so it is
 * re-written with a backoff. Past the deadline, thaw and report, as Freeze.done. */
static int cmd_pause(const char *root, const char *id)
{
    struct container c;
    char dir[PATH_MAX], msg[PATH_MAX + 128];
    int version = locked_freezer(&c, root, id, "created", "running", dir);
    double deadline = seconds() + FREEZE_DEADLINE;
    int notify = -1;
    if (version == 2) {
        char events[PATH_MAX + 16];
        snprintf(events, sizeof events, "%s/cgroup.events", dir);
        notify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (notify < 0 || inotify_add_watch(notify, events, IN_MODIFY) < 0)
            python();
    }
    if (set_freezer(dir, version, 1, msg, sizeof msg) < 0)
        python(); /* nothing changed: Python tries again and words the error */
    close(c.lock); /* as pause_begin: the wait is outside the lock */
    double retry = 0.001;
    int code = 0;
    for (;;) {
        char drain[4096];
        while (notify >= 0 && read(notify, drain, sizeof drain) > 0)
            ;
        if (frozen(dir, version))
            break;
        double now = seconds();
        if (now > deadline) {
            set_freezer(dir, version, 0, msg, sizeof msg);
            touch(&c);
            return fail("unable to freeze the container within 5 s (its processes keep forking?); thawed it");
        }
        if (version == 1) {
            if (set_freezer(dir, version, 1, msg, sizeof msg) < 0) {
                code = fail(msg);
                break;
            }
            retry = retry * 2 < 0.1 ? retry * 2 : 0.1;
            struct timespec pause = {0, (long)(retry * 1e9)};
            nanosleep(&pause, NULL);
        } else {
            /* Python waits without a timeout; waking at the deadline lets it apply */
            struct pollfd p = {.fd = notify, .events = POLLIN};
            poll(&p, 1, (int)((deadline - now) * 1000) + 1);
        }
    }
    touch(&c);
    return code;
}

static int cmd_resume(const char *root, const char *id)
{
    struct container c;
    char dir[PATH_MAX], msg[PATH_MAX + 128];
    int version = locked_freezer(&c, root, id, "pausing", "paused", dir);
    if (set_freezer(dir, version, 0, msg, sizeof msg) < 0)
        python(); /* nothing changed: Python tries again and words the error */
    close(c.lock);
    touch(&c);
    return 0;
}

/* ---- list (as cli.main.cmd_list) ---- */

struct entry {
    char id[1040], bundle[PATH_MAX], created[64], owner[256];
    const char *rootfs, *rootfs_end, *status;
    long long pid;
};

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The ids as Store.ids: names of a container id with a state.json, sorted. */
static int container_ids(const char *root, char ***ids)
{
    int n = 0, cap = 16;
    if ((*ids = malloc((size_t)cap * sizeof **ids)) == NULL)
        python();
    DIR *d = opendir(root);
    if (d == NULL) {
        if (errno != ENOENT)
            python();
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[PATH_MAX + 1100];
        if (strchr(e->d_name, '\n'))
            python(); /* Python's `$` lets one trailing newline through */
        snprintf(path, sizeof path, "%s/%s/state.json", root, e->d_name);
        if (!container_id_ok(e->d_name) || access(path, F_OK) < 0)
            continue;
        if (n == cap && (*ids = realloc(*ids, (size_t)(cap *= 2) * sizeof **ids)) == NULL)
            python();
        (*ids)[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(*ids, (size_t)n, sizeof **ids, by_name);
    return n;
}

/* The directory owner's name as cli.main._owner; Python handles names to escape. */
static void owner(const char *dir, char *out, size_t size)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        python();
    struct passwd *pw = getpwuid(st.st_uid);
    if (pw == NULL) {
        snprintf(out, size, "#%u", (unsigned)st.st_uid);
        return;
    }
    for (const char *p = pw->pw_name; *p; p++)
        if (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\')
            python();
    if (snprintf(out, size, "%s", pw->pw_name) >= (int)size)
        python();
}

/* One container's row, checked to the last field before anything is printed. */
static void list_entry(const char *root, const char *name, int json, struct entry *e)
{
    struct container c;
    load(&c, root, name, 0);
    const char *ann = member(c.json, "annotations");
    if (json && ann != NULL && *ann == '{' && *ws(ann + 1) != '}')
        python(); /* printed nested: Python's job */
    e->rootfs = member(c.json, "rootfs");
    e->rootfs_end = e->rootfs ? skip(e->rootfs) : NULL;
    if (string(member(c.json, "id"), e->id, sizeof e->id) < 0 ||
        string(member(c.json, "bundle"), e->bundle, sizeof e->bundle) < 0 ||
        string(member(c.json, "created"), e->created, sizeof e->created) < 0 || e->rootfs_end == NULL ||
        *e->rootfs != '"')
        python();
    e->status = status(&c);
    e->pid = strcmp(e->status, "stopped") == 0 ? 0 : c.pid;
    owner(c.dir, e->owner, sizeof e->owner);
}

static void pad(FILE *out, const char *text, int width)
{
    fprintf(out, "%-*s", width, text);
}

/* Go's tabwriter as runc sets it up (minwidth 12, padding 3), the last column unpadded (_table). */
static void table(FILE *out, const struct entry *e, int n)
{
    int w[5] = {12, 12, 12, 12, 12};
    const char *head[6] = {"ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"};
    for (int i = 0; i < n; i++) {
        char pid[32];
        int len[5] = {(int)strlen(e[i].id), snprintf(pid, sizeof pid, "%lld", e[i].pid), (int)strlen(e[i].status),
                      (int)strlen(e[i].bundle), (int)strlen(e[i].created)};
        for (int k = 0; k < 5; k++)
            if (len[k] + 3 > w[k])
                w[k] = len[k] + 3;
    }
    for (int k = 0; k < 5; k++)
        pad(out, head[k], w[k]);
    fprintf(out, "%s\n", head[5]);
    for (int i = 0; i < n; i++) {
        char pid[32];
        snprintf(pid, sizeof pid, "%lld", e[i].pid);
        pad(out, e[i].id, w[0]);
        pad(out, pid, w[1]);
        pad(out, e[i].status, w[2]);
        pad(out, e[i].bundle, w[3]);
        pad(out, e[i].created, w[4]);
        fprintf(out, "%s\n", e[i].owner);
    }
}

/* json.dumps(states or None, separators=(",", ":")): oci_state's keys, owner replaced. */
static void json_list(FILE *out, const struct entry *e, int n)
{
    if (n == 0) {
        fputs("null\n", out);
        return;
    }
    for (int i = 0; i < n; i++)
        fprintf(out,
                "%s{\"ociVersion\":\"1.0.2-dev\",\"id\":\"%s\",\"pid\":%lld,\"status\":\"%s\",\"bundle\":\"%s\","
                "\"rootfs\":%.*s,\"created\":\"%s\",\"owner\":\"%s\"}",
                i ? "," : "[", e[i].id, e[i].pid, e[i].status, e[i].bundle, (int)(e[i].rootfs_end - e[i].rootfs),
                e[i].rootfs, e[i].created, e[i].owner);
    fputs("]\n", out);
}

static int cmd_list(const char *root, int quiet, int json)
{
    char **ids;
    int n = container_ids(root, &ids);
    struct entry *e = calloc((size_t)n + 1, sizeof *e);
    if (e == NULL)
        python();
    for (int i = 0; i < n; i++)
        list_entry(root, ids[i], json, &e[i]);
    if (quiet)
        for (int i = 0; i < n; i++)
            printf("%s\n", e[i].id);
    else if (json)
        json_list(stdout, e, n);
    else
        table(stdout, e, n);
    return 0;
}

/* ---- ps --format json (as cli.main.cmd_ps; the table runs ps(1): Python's) ---- */

static int by_number(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static int cmd_ps_json(const char *root, const char *id)
{
    struct container c;
    struct pids found = {0};
    load(&c, root, id, 0);
    procs(&c, &found);
    qsort(found.v, (size_t)found.n, sizeof *found.v, by_number);
    if (found.n == 0)
        fputs("null", stdout);
    for (int i = 0; i < found.n; i++)
        if (i == 0 || found.v[i] != found.v[i - 1])
            printf("%s%ld", i ? "," : "[", found.v[i]);
    puts(found.n ? "]" : "");
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
        if (value == NULL)
            python(); /* a boolean's =true|false */
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
    const char *cmd = argv[i++], *format = "table";
    int force = 0, all = 0, quiet = 0, list = strcmp(cmd, "list") == 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *w = argv[i];
        if (strcmp(cmd, "delete") == 0 && (strcmp(w, "--force") == 0 || strcmp(w, "-f") == 0))
            force = 1;
        else if (strcmp(cmd, "kill") == 0 && (strcmp(w, "--all") == 0 || strcmp(w, "-a") == 0))
            all = 1;
        else if (list && (flag(w, "quiet", NULL, &i, argc) || flag(w, "q", NULL, &i, argc)))
            quiet = 1;
        else if (!((list || strcmp(cmd, "ps") == 0) && (flag(w, "format", &format, &i, argc) || flag(w, "f", &format, &i, argc))))
            python(); /* --help, ... */
    }
    int rest = argc - i;
    if (list && rest == 0 && (strcmp(format, "table") == 0 || strcmp(format, "json") == 0))
        return cmd_list(root, quiet, strcmp(format, "json") == 0);
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
    if (strcmp(cmd, "ps") == 0 && rest == 1 && strcmp(format, "json") == 0)
        return cmd_ps_json(root, id);
    if (strcmp(cmd, "pause") == 0 && rest == 1)
        return cmd_pause(root, id);
    if (strcmp(cmd, "resume") == 0 && rest == 1)
        return cmd_resume(root, id);
    python();
}
