"""This process's shard ordinal: `--shard N`, or the number a StatefulSet puts at the end of
its pod names (`hebbian-2` -> 2, from the HOSTNAME the kubelet sets)."""

from __future__ import annotations

import re

_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?-(?P<ordinal>0|[1-9][0-9]*)$")


def ordinal_from_pod_name(name: str) -> int | None:
    """The trailing ordinal of a StatefulSet pod name (`hebbian-2` -> 2); None without one."""
    match = _POD_NAME.match(name.strip())
    return int(match["ordinal"]) if match else None
