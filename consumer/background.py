"""A consumer's background threads (the heartbeat, the clock): each runs its loop in a
daemon thread while the worker runs, until asked to stop."""

import contextlib
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def background(
    loop: Callable[[], None], name: str, stop: threading.Event
) -> Iterator[None]:
    """Run `loop` in a thread named `name` for the duration of the block; at its end,
    set `stop` (which the loop watches) and wait for the thread."""
    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
