"""`python -m bench.raw_consumer`: the raw limit's consumer process, plain redis-py with
no pipeline code around it: XREADGROUP COUNT 500 (blocking) and one XACK per batch,
until SIGTERM. With RAW_STAMPS set, it also appends, for each entry with a `sent` field
(the writer's clock), that time and how long the entry took to arrive: the floor of
dispatch->start."""

import os
import sys
import time

import redis

BATCH = 500
BLOCK_MS = 2000


def main() -> int:
    env = os.environ
    name, stamps = env["CONSUMER_NAME"], env.get("RAW_STAMPS")
    stream, group = env.get("STREAM", "tasks"), env.get("GROUP", "workers")
    # Bytes, undecoded: the least work a reader can do per entry.
    client = redis.Redis.from_url(env["REDIS_URL"], client_name=name)
    out = os.open(stamps, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if stamps else None
    while True:
        reply = client.xreadgroup(group, name, {stream: ">"}, BATCH, BLOCK_MS)
        arrived_s = time.time()
        if not isinstance(reply, list) or not reply:
            continue
        [(_stream, entries)] = reply
        if out is not None:
            sent = [float(fields[b"sent"]) for _, fields in entries]
            lines = "".join(f"{s:.6f} {arrived_s - s:.6f}\n" for s in sent)
            os.write(out, lines.encode())
        client.xack(stream, group, *(entry_id for entry_id, _ in entries))


if __name__ == "__main__":
    sys.exit(main())
