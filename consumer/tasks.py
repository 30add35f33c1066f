"""The task table: `@task` puts a function in TASKS under its name. Also the built-in
tasks."""

import functools
import importlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from consumer.errors import InvalidMessageError, TaskModuleError
from consumer.message import Message
from pipeline_core.wire import PAYLOAD_FIELD, TASK_NAME, WireError, decode_payload

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
TASKS: dict[str, Callable[..., Any]] = {}


@overload
def task(function: F) -> F: ...
@overload
def task(*, name: str | None = None) -> Callable[[F], F]: ...
def task(function: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
    """Register a function as a task, under its own name or `name`."""

    def register(function: F) -> F:
        key = name or function.__name__
        if not TASK_NAME.fullmatch(key):
            raise TaskModuleError(f"task name {key!r} must match {TASK_NAME.pattern}")
        if TASKS.get(key, function) is not function:
            raise TaskModuleError(f"two functions are registered as task {key!r}")
        TASKS[key] = function
        return function

    return register(function) if function is not None else register


def load_task_modules(modules: Iterable[str]) -> None:
    """Import the user's modules so their `@task` functions register."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise TaskModuleError(
                f"TASK_MODULES: cannot import {module!r}: {error}"
            ) from None


def bind_task(
    tasks: Mapping[str, Callable[..., Any]], message: Message
) -> Callable[[], Any]:
    """The task call for a message, checked before it runs: unknown names and payloads
    that do not fit the function's parameters can never succeed."""
    function = tasks.get(message.task)
    if function is None:
        raise InvalidMessageError(f"unknown task {message.task!r}")
    try:
        payload = decode_payload(message.fields.get(PAYLOAD_FIELD))
    except WireError as error:
        raise InvalidMessageError(str(error)) from None
    required, accepted = parameters(function)
    # Subset tests build no sets: the usual payload fits, and is checked cheaply.
    fits = required.issubset(payload) and (
        accepted is None or accepted.issuperset(payload)
    )
    if not fits:
        missing = required - payload.keys()
        unexpected = payload.keys() - accepted if accepted is not None else set()
        problems = [f"missing {sorted(missing)}"] if missing else []
        problems += [f"unexpected {sorted(unexpected)}"] if unexpected else []
        reason = ", ".join(problems)
        raise InvalidMessageError(
            f"payload does not fit task {message.task!r}: {reason}"
        )
    return functools.partial(function, **payload)


@functools.cache
def parameters(
    function: Callable[..., Any],
) -> tuple[frozenset[str], frozenset[str] | None]:
    """The keyword arguments a function requires, and those it accepts (None: any, it
    takes **kwargs). Read once per function: inspect.signature is slow per message."""
    kinds = inspect.Parameter
    names, required, any_name = set(), set(), False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is kinds.VAR_KEYWORD:
            any_name = True
        elif parameter.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY):
            names.add(parameter.name)
        if parameter.default is kinds.empty and parameter.kind not in (
            kinds.VAR_KEYWORD,
            kinds.VAR_POSITIONAL,
        ):
            required.add(parameter.name)  # a positional-only one can never be given
    return frozenset(required), None if any_name else frozenset(names)


@task
def demo(**payload: Any) -> dict[str, Any]:
    """The seed's message processing: log the message and hand it back."""
    log.info("demo message processed", extra={"payload": payload})
    return payload


@task
def primes(n: int) -> int:
    """Count the primes below n by trial division: honest CPU-bound work."""
    count = 0
    for candidate in range(2, n):
        if all(candidate % d for d in range(2, int(candidate**0.5) + 1)):
            count += 1
    return count


@task
def sleep(seconds: float) -> float:
    """Wait, holding the worker: stands in for slow I/O-bound work."""
    time.sleep(seconds)
    return seconds
