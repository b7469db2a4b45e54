"""The runc-compatible command line (``main.main``).

Importing this package starts, for the commands that create a container, the kernel's
wait before the first cgroup migration, so that it runs while Python imports the rest.
The first write to any ``cgroup.procs`` after a quiet spell waits for an RCU grace period
(cgroup_threadgroup_rwsem): 10-20 ms on the reference machine, more than everything else
``create`` does. Writing our own pid to our own cgroup2 cgroup migrates nothing but starts
that wait in a thread; the init's real join, moments later, finds it done. Only builtin
modules are used: this runs before anything else is imported.
"""

import _thread
import os
import sys


def _warm_cgroup_migration(started: "_thread.LockType") -> None:
    fd = -1
    try:
        with open("/proc/self/cgroup") as f:
            line = next(x for x in f if x.startswith("0::"))  # cgroup2: unified or the only one
        top = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
        fd = os.open(f"{top}{line[3:].rstrip()}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    except (OSError, StopIteration):
        pass  # no cgroup2 (pure v1): the join pays the wait itself
    finally:
        started.release()
    if fd >= 0:
        try:
            os.write(fd, str(os.getpid()).encode())  # blocks for the grace period, without the GIL
        except OSError:
            pass
        os.close(fd)


if sys.argv[0].endswith("aioruntime") and {"create", "run"} & set(sys.argv[1:8]):
    _started = _thread.allocate_lock()
    _started.acquire()
    _thread.start_new_thread(_warm_cgroup_migration, (_started,))
    _started.acquire()  # until the thread is about to block in the kernel, not on the GIL
