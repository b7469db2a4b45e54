"""A container's cgroup as the managers see it: for each controller, its directory and
whether it is a cgroup v1 or v2 one (hybrid layouts mix both)."""


from collections.abc import Mapping
from typing import NamedTuple

from ..errors import ResourceError
from .mounts import controllers, unified


class Cgroup(NamedTuple):
    dirs: Mapping[str, str]  # controller -> the container's cgroup directory for it
    versions: Mapping[str, int]  # controller -> 1 or 2
    unified: str | None  # the container's cgroup2 directory (core files: events, kill, freeze)

    def dir(self, controller: str, field: str) -> str:
        """The directory of ``controller``, or a ResourceError naming ``field`` when the
        kernel (or the cgroup layout) does not offer it."""
        if controller in self.dirs:
            return self.dirs[controller]
        raise ResourceError(
            field,
            f"the {controller} cgroup controller is not available: no cgroup v1 hierarchy holds it "
            "and the cgroup v2 hierarchy does not offer it",
        )

    def has(self, controller: str) -> bool:
        return controller in self.dirs


def locate(paths: Mapping[str, str]) -> Cgroup:
    """``paths`` maps each hierarchy's mountpoint to the container's cgroup in it (State.cgroup_paths)."""
    dirs, versions = {}, {}
    for name, place in controllers().items():
        d = paths.get(place.mountpoint)
        if d is not None:
            dirs[name], versions[name] = d, place.version
    v2 = unified()
    return Cgroup(dirs, versions, paths.get(v2.mountpoint) if v2 else None)

