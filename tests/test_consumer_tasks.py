"""The task table: registration, loading user modules, binding payloads, built-ins."""

import pickle
from collections.abc import Callable
from typing import Any

import pytest

from consumer import task, tasks
from consumer.errors import InvalidMessageError, TaskModuleError
from consumer.message import Message


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    fresh: dict[str, Any] = {}
    monkeypatch.setattr(tasks, "TASKS", fresh)
    return fresh


def message(task_name: str, payload: str) -> Message:
    return Message("1-0", {"task": task_name, "payload": payload}, 1, task_name)


def test_task_registers_a_function_under_its_name(table: dict[str, Any]) -> None:
    @task
    def resize(path: str) -> str:
        return path

    @task(name="images.crop")
    def crop(path: str) -> str:
        return path

    # The table holds the tasks; each is still its function when called.
    assert table == {"resize": resize, "images.crop": crop}
    assert resize("a") == "a" and resize.function.__name__ == "resize"
    assert (resize.name, crop.name) == ("resize", "images.crop")


def test_a_task_pickles_by_reference_as_its_function_did() -> None:
    # multiprocessing pools pickle what they run (bench/raw.py maps primes).
    restored = pickle.loads(pickle.dumps(tasks.primes))
    assert restored is tasks.primes and restored(10) == tasks.primes.function(10)


def test_task_refuses_two_functions_under_one_name(table: dict[str, Any]) -> None:
    task(name="job")(lambda: 1)
    with pytest.raises(TaskModuleError, match="job"):
        task(name="job")(lambda: 2)


def test_task_refuses_a_name_the_dispatcher_would_refuse(table: dict[str, Any]) -> None:
    with pytest.raises(TaskModuleError, match="must match"):
        task(name="no spaces")(lambda: 1)


def test_load_task_modules_names_the_variable_on_failure() -> None:
    with pytest.raises(
        TaskModuleError, match=r"TASK_MODULES: cannot import 'nope\.nothing'"
    ):
        tasks.load_task_modules(["nope.nothing"])


def test_bind_task_checks_the_payload_against_the_parameters() -> None:
    call = tasks.bind_task({"primes": tasks.primes}, message("primes", '{"n": 10}'))
    assert call() == 4
    with pytest.raises(InvalidMessageError, match="does not fit"):
        tasks.bind_task({"primes": tasks.primes}, message("primes", '{"m": 10}'))
    with pytest.raises(InvalidMessageError, match="unknown task"):
        tasks.bind_task({}, message("primes", "{}"))


def test_builtin_tasks_do_their_work() -> None:
    assert tasks.primes(100) == 25
    assert tasks.demo(seq=3) == {"seq": 3}
    assert tasks.sleep(0) == 0


def test_bind_task_names_what_is_missing_and_what_is_unexpected() -> None:
    def resize(path: str, width: int = 64, *, crop: bool = False) -> None: ...

    def anything(**payload: Any) -> None: ...

    def positional(path: str, /) -> None: ...

    table: dict[str, Callable[..., Any]] = {"resize": resize, "anything": anything}
    table["positional"] = positional
    tasks.bind_task(table, message("resize", '{"path": "a", "crop": true}'))
    tasks.bind_task(table, message("anything", '{"x": 1, "y": 2}'))
    with pytest.raises(
        InvalidMessageError, match=r"missing \['path'\], unexpected \['w'\]"
    ):
        tasks.bind_task(table, message("resize", '{"w": 1}'))
    with pytest.raises(InvalidMessageError, match=r"unexpected \['path'\]"):
        tasks.bind_task(
            table, message("positional", '{"path": "a"}')
        )  # positional-only
