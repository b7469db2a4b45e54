"""update: change a live container's resource limits, all of them or none.

The change is merged over the resources in force (kept in the state's config, as runc
keeps them), the result checked as a whole, and only then written; the state records the
new resources once the kernel took every value.
"""

from __future__ import annotations

from typing import Any

from ..cgroups import resources as cgroup_resources
from ..cgroups.placement import locate
from ..spec.resources import Resources, check_consistent, merge, parse_resources, to_dict, validated
from ..state import State, Store
from ..status import require
from .lifecycle import status_of


def in_force(config: dict[str, Any]) -> tuple[Resources, list[str]]:
    """The resources a container's config holds, and the paths of its ``linux.devices``."""
    linux = config.get("linux") or {}
    resources = parse_resources(linux.get("resources") or {})
    return resources, [d.get("path", "") for d in linux.get("devices") or ()]


def update(store: Store, container_id: str, change: Resources) -> State:
    """Apply ``change`` (its None fields keep their values) to a created, running or paused
    container; return the state with the new resources."""
    change = validated(change)
    with store.lock(container_id):
        state = store.load(container_id)
        require(container_id, "update", status_of(store, state))
        current, device_paths = in_force(state.config)
        merged = merge(current, change)
        check_consistent(merged, "linux.resources")
        cg = locate(state.cgroup_paths)
        devices = None
        if change.devices is not None:
            devices = cgroup_resources.plan_devices(
                cgroup_resources.device_state(current.devices, device_paths),
                cgroup_resources.device_state(change.devices, device_paths),
                cg,
            )
        cgroup_resources.apply(change, merged, cg, devices, new_cgroup=False)
        config = dict(state.config)
        config["linux"] = {**(config.get("linux") or {}), "resources": to_dict(merged)}
        state = state._replace(config=config)
        store.save(state)
        return state
