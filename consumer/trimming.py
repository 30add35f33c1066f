"""Trimming: drop acknowledged entries from the stream, never one a group still needs.

XTRIM MAXLEN would drop the oldest entries whether or not they were delivered or acked;
XTRIM MINID up to the oldest needed entry removes only what every group has finished.
"""

import redis

from pipeline_core.connection import Client
from pipeline_core.wire import parse_entry_id


def oldest_needed(client: Client, stream: str) -> str | None:
    """The oldest entry ID some group still needs (pending, or not yet delivered), or
    None when the stream has no group (then nothing may be trimmed)."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return None  # no such stream
    if not groups:
        return None
    # Read every group's position before its pending list: an entry delivered between
    # the two reads is newer than the position read, so it stays above the floor.
    floor = min(parse_entry_id(group["last-delivered-id"]) for group in groups)
    for group in groups:
        if group["pending"]:
            summary = client.xpending(stream, group["name"])
            if summary["min"] is not None:
                floor = min(floor, parse_entry_id(summary["min"]))
    return f"{floor[0]}-{floor[1]}"


def trim_acknowledged(client: Client, stream: str) -> int:
    """Remove the entries older than the oldest needed one; returns how many went."""
    floor = oldest_needed(client, stream)
    if floor is None:
        return 0
    removed = client.xtrim(stream, minid=floor, approximate=False)
    return removed if isinstance(removed, int) else 0
