"""The task table: `@task` puts a function in TASKS under its name. Also the built-in
tasks."""

import functools
import importlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, ParamSpec, TypeVar, overload

from consumer import api
from consumer.errors import InvalidMessageError, TaskModuleError
from consumer.message import Message
from consumer.options import TaskOptions
from pipeline_core.payloads import PayloadError
from pipeline_core.task_ref import TaskRef
from pipeline_core.timing import make_timing
from pipeline_core.wire import PAYLOAD_FIELD, TASK_NAME, WireError, decode_payload

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
TASKS: dict[str, "Task[..., Any]"] = {}


class Task(Generic[P, R]):  # Generic: typing's, for the signature; nothing inherited
    """What `@task` makes of a function: still the function when called, plus sending
    it to the queue (consumer/api.py's sender): `send`, `send_many`, `send_with`."""

    def __init__(
        self, function: Callable[P, R], name: str, options: TaskOptions | None = None
    ) -> None:
        functools.update_wrapper(self, function)
        self.function, self.name = function, name
        self.options = options or TaskOptions()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.name!r}>"

    def __reduce__(self) -> str:
        # Pickled by reference, as the plain function was (multiprocessing hands
        # tasks to pools): update_wrapper copied the function's module and qualname.
        return self.function.__qualname__

    def send(self, **payload: Any) -> TaskRef:
        """One task with these keyword arguments, one round trip."""
        return self.send_with(payload)

    def send_many(self, payloads: Sequence[Mapping[str, Any]]) -> list[TaskRef]:
        """Tasks in order, all or none (one MULTI's worth: one script)."""
        for index, payload in enumerate(payloads):
            self.check_fits(payload, f"payloads[{index}]")
        return api.sender().send_many(self.name, payloads)

    def send_with(
        self,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        countdown_s: float | None = None,
        run_at: float | datetime | None = None,
        expires_s: float | None = None,
    ) -> TaskRef:
        """One task, with options: `idempotency_key` sends it once per key (for
        IDEMPOTENCY_TTL_S), a repeat returning the first send's task; `countdown_s`
        or `run_at` (Unix seconds or an aware datetime) run it later; `expires_s`:
        not started that long after it was due, it never runs (state `expired`)."""
        self.check_fits(payload, "payload")
        sender = api.sender()
        timing = make_timing(countdown_s, run_at, expires_s, sender.max_countdown_s)
        return sender.send(
            self.name, payload, idempotency_key=idempotency_key, timing=timing
        )

    def check_fits(self, payload: Any, field: str) -> None:
        """A payload the function cannot take raises here, in the caller, with the
        reason a consumer would dead-letter it with."""
        if isinstance(payload, Mapping):
            problem = misfit(self.name, self.function, payload)
            if problem:
                raise PayloadError(field, problem)


@overload
def task(function: Callable[P, R]) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    max_retries: int | None = None,
    backoff_s: float | None = None,
    backoff_max_s: float | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    timeout_s: float | None = None,
    every_s: float | None = None,
    cron: str | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(
    function: Callable[P, R] | None = None,
    *,
    name: str | None = None,
    max_retries: int | None = None,
    backoff_s: float | None = None,
    backoff_max_s: float | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    timeout_s: float | None = None,
    every_s: float | None = None,
    cron: str | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a function as a task, under its own name or `name`, with its options
    (consumer/options.py: retries, timeout, schedule)."""
    options = TaskOptions(max_retries, backoff_s, backoff_max_s, retry_on, timeout_s,
                          every_s, cron)  # fmt: skip

    def register(function: Callable[P, R]) -> Task[P, R]:
        key = name or function.__name__
        if not TASK_NAME.fullmatch(key):
            raise TaskModuleError(f"task name {key!r} must match {TASK_NAME.pattern}")
        known = TASKS.get(key)
        if known is not None and known.function is not function:
            raise TaskModuleError(f"two functions are registered as task {key!r}")
        options.check(key)
        if options.periodic and parameters(function)[0]:
            raise TaskModuleError(
                f"task {key!r} is periodic: it runs with an empty payload, so it "
                "cannot require parameters"
            )
        registered = Task(function, key, options)
        TASKS[key] = registered
        return registered

    return register(function) if function is not None else register


def options_of(function: Callable[..., Any]) -> TaskOptions:
    """A registered task's options; a plain function (a test's) has the defaults."""
    return function.options if isinstance(function, Task) else TaskOptions()


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
) -> "functools.partial[Any]":
    """The task call for a message, checked before it runs: unknown names and payloads
    that do not fit the function's parameters can never succeed."""
    function = tasks.get(message.task)
    if function is None:
        raise InvalidMessageError(f"unknown task {message.task!r}")
    try:
        payload = decode_payload(message.fields.get(PAYLOAD_FIELD))
    except WireError as error:
        raise InvalidMessageError(str(error)) from None
    problem = misfit(message.task, function, payload)
    if problem:
        raise InvalidMessageError(f"payload {problem}")
    return functools.partial(function, **payload)


def misfit(
    name: str, function: Callable[..., Any], payload: Mapping[str, Any]
) -> str | None:
    """Why `payload` does not fit the function's parameters, or None."""
    required, accepted = parameters(function)
    # Subset tests build no sets: the usual payload fits, and is checked cheaply.
    if required.issubset(payload) and (
        accepted is None or accepted.issuperset(payload)
    ):
        return None
    missing = required - payload.keys()
    unexpected = payload.keys() - accepted if accepted is not None else set()
    problems = [f"missing {sorted(missing)}"] if missing else []
    problems += [f"unexpected {sorted(unexpected)}"] if unexpected else []
    return f"does not fit task {name!r}: {', '.join(problems)}"


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
