"""A deliberately broken consumer, for the checker's control runs: it acknowledges the
entries it reads *before* running them (at-most-once), so a kill loses work.
`python -m chaos.broken`, with the consumer's environment."""

import os
import sys

from consumer.__main__ import connect_consumer
from consumer.message import read_entries, to_messages
from consumer.settings import from_env
from consumer.tasks import TASKS, bind_task, load_task_modules
from consumer.worker import Worker


def main() -> int:
    settings = from_env(os.environ)
    load_task_modules(settings.task_modules)
    client = connect_consumer(settings)
    Worker(client, settings, TASKS).ensure_group()
    while True:
        q = settings.queue
        reply = client.xreadgroup(
            q.group, settings.consumer_name, {q.stream: ">"},
            settings.batch_size, settings.block_ms,
        )  # fmt: skip
        messages = to_messages(read_entries(reply), deliveries=1)
        if messages:
            client.xack(q.stream, q.group, *(m.entry_id for m in messages))
        for message in messages:
            bind_task(TASKS, message)()  # the broken order: acked already


if __name__ == "__main__":
    sys.exit(main())
