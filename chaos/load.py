"""Load: dispatches over HTTP at a steady rate and records every answer in a Ledger.

A 202 with its task IDs is acknowledged; a 4xx is refused; a 5xx, a timeout or a broken
connection is unknown (the entries may or may not be on the stream). A task's ID is
stable: a delayed task's (`<ms>-1<18 digits>`) is never an entry ID, and a retry keeps
it while its entry IDs change.
"""

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# What request number n dispatches: (task, payloads per request, seconds of work each).
Mix = Callable[[int], tuple[str, int, float]]
# When request number n asks its tasks to run: {} (now), {"countdown": s} or
# {"run_at": Unix s}, added to its body.
When = Callable[[int], dict[str, float]]
PREFIX = {"chaos.work": "w", "chaos.gil": "w", "chaos.poison": "p", "chaos.crash": "c",
          "chaos.flaky": "r"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Answer:
    started_s: float
    ended_s: float
    status: str  # the HTTP code, or "timeout" / "error"
    retry_after: bool
    reason: str = ""  # a refusal's "error" and "reason" from its JSON body


@dataclass
class Ledger:
    acknowledged: dict[str, str] = field(default_factory=dict)  # token -> task ID
    refused: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def statuses(self) -> Counter[str]:
        with self.lock:
            return Counter(answer.status for answer in self.answers)

    def add(self, tokens: list[str], answer: Answer, task_ids: list[str]) -> None:
        with self.lock:
            self.answers.append(answer)
            if answer.status == "202":
                self.acknowledged.update(zip(tokens, task_ids, strict=True))
            elif answer.status.startswith("4"):
                self.refused.update(tokens)
            else:
                self.unknown.update(tokens)


def steady(task: str, batch: int, seconds: float) -> Mix:
    return lambda n: (task, batch, seconds)


def right_away(number: int) -> dict[str, float]:
    """Every request runs its tasks now."""
    return {}


class Load:
    """Sender threads that together post rate_per_s messages per second."""

    def __init__(
        self,
        base_url: str,
        rate_per_s: float,
        mix: Mix,
        threads: int = 4,
        when: When = right_away,
    ) -> None:
        self.url = f"{base_url}/dispatch"
        self.rate_per_s = rate_per_s
        self.mix, self.when = mix, when
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._numbers = itertools.count()
        self._threads = [
            threading.Thread(target=self._send_loop, args=(i, threads), daemon=True)
            for i in range(threads)
        ]

    def start(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Ledger:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.ledger

    def _send_loop(self, index: int, threads: int) -> None:
        next_s = time.monotonic() + index * 0.01
        while not self._stop.wait(max(0.0, next_s - time.monotonic())):
            sent = self.send(next(self._numbers))
            next_s += threads * sent / self.rate_per_s  # a slow answer is not made up

    def send(self, number: int) -> int:
        """Post request `number`; returns how many messages it carried."""
        task, batch, seconds = self.mix(number)
        tokens = [f"{PREFIX[task]}{number}.{i}" for i in range(batch)]
        payloads = [{"token": token, "seconds": seconds} for token in tokens]
        if PREFIX[task] != "w":
            payloads = [{"token": token} for token in tokens]
        body = json.dumps({"task": task, "payloads": payloads, **self.when(number)})
        request = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        started_s = time.monotonic()
        status, retry_after, task_ids, reason = _post(request)
        answer = Answer(started_s, time.monotonic(), status, retry_after, reason)
        self.ledger.add(tokens, answer, task_ids)
        return batch


def _post(request: urllib.request.Request) -> tuple[str, bool, list[str], str]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            task_ids: list[str] = json.loads(response.read())["task_ids"]
            return str(response.status), False, task_ids, ""
    except urllib.error.HTTPError as error:
        hint = error.headers.get("Retry-After") is not None
        return str(error.code), hint, [], _reason(error.read())
    except TimeoutError:
        return "timeout", False, [], ""
    except OSError:
        return "error", False, [], ""


def _reason(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    return f"{answer.get('error', '')}: {answer.get('reason', answer.get('rule', ''))}"
