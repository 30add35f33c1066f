"""Consumer workers for the Redis stream. Users import one name: `from consumer import
task`."""

from consumer.tasks import task

__all__ = ["task"]
