"""cgroup v1, v2 and hybrid handling."""
