"""Load: dispatches over HTTP at a steady rate and records every answer in a Ledger.

A 202 with its task IDs is acknowledged; a 4xx is refused; a 5xx, a timeout or a broken
connection is unknown (the entries may or may not be on the stream). A task's ID is
stable: a delayed task's (`<ms>-1<18 digits>`) is never an entry ID, and a retry keeps
it while its entry IDs change. With `Retries`, a request carries an Idempotency-Key and
is sent again with it until it is answered (202 or 4xx): only its last answer settles
its tokens, and every attempt is in the ledger's answers.
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
from email.message import Message

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
    attempt: int = 1  # the how-manieth sending of its request
    replayed: bool = False  # a 202 with `Idempotent-Replayed: true`


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

    def note(self, answer: Answer) -> None:
        """An attempt that settles nothing: its request is sent again."""
        with self.lock:
            self.answers.append(answer)

    def add(self, tokens: list[str], answer: Answer, task_ids: list[str]) -> None:
        """A request's last answer: what it settles for its tokens."""
        with self.lock:
            self.answers.append(answer)
            if answer.status == "202":
                self.acknowledged.update(zip(tokens, task_ids, strict=True))
            elif answer.status.startswith("4"):
                self.refused.update(tokens)
            else:
                self.unknown.update(tokens)


@dataclass(frozen=True, slots=True)
class Retries:
    """A client that sends a request with an Idempotency-Key of its own and, after a
    timeout (timeout_s), a 5xx or a broken connection, sends it again with the same
    key pause_s later, until a 202 or a 4xx, or until_s after its first try."""

    timeout_s: float = 2.0
    until_s: float = 30.0
    pause_s: float = 0.25


ONCE = Retries(timeout_s=10.0, until_s=0.0)  # one try, no key: the default


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
        retries: Retries = ONCE,
        headers: dict[str, str] | None = None,
    ) -> None:
        """`headers` go with every request (an Authorization header)."""
        self.url = f"{base_url}/dispatch"
        self.rate_per_s = rate_per_s
        self.mix, self.when, self.retries = mix, when, retries
        self.headers = {"Content-Type": "application/json", **(headers or {})}
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
        headers = dict(self.headers)
        if self.retries.until_s:
            headers["Idempotency-Key"] = f"chaos-{number}"
        answer, task_ids = self._until_answered(body.encode(), headers)
        self.ledger.add(tokens, answer, task_ids)
        return batch

    def _until_answered(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[Answer, list[str]]:
        """Send, and send again (same body, same key) while the outcome is unknown and
        the retries allow; the last answer and its task IDs."""
        retries = self.retries
        deadline = time.monotonic() + retries.until_s
        attempt = 1
        while True:
            request = urllib.request.Request(self.url, data=body, headers=headers)
            answer, task_ids = _post(request, retries.timeout_s, attempt)
            settled = answer.status == "202" or answer.status.startswith("4")
            if settled or time.monotonic() + retries.pause_s > deadline:
                return answer, task_ids
            self.ledger.note(answer)
            time.sleep(retries.pause_s)
            attempt += 1


def _post(
    request: urllib.request.Request, timeout_s: float, attempt: int
) -> tuple[Answer, list[str]]:
    """One attempt: its answer and, with a 202, its task IDs."""
    started_s = time.monotonic()
    status, headers, body = _exchange(request, timeout_s)
    answer = Answer(
        started_s,
        time.monotonic(),
        status,
        retry_after=headers.get("Retry-After") is not None,
        reason="" if status == "202" else _reason(body),
        attempt=attempt,
        replayed=headers.get("Idempotent-Replayed") == "true",
    )
    task_ids: list[str] = json.loads(body)["task_ids"] if status == "202" else []
    return answer, task_ids


def _exchange(
    request: urllib.request.Request, timeout_s: float
) -> tuple[str, Message, bytes]:
    """The status ("timeout" or "error" without an answer), headers and body."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return str(response.status), response.headers, response.read()
    except urllib.error.HTTPError as error:
        return str(error.code), error.headers, error.read()
    except TimeoutError:
        return "timeout", Message(), b""
    except OSError:
        return "error", Message(), b""


def _reason(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    return f"{answer.get('error', '')}: {answer.get('reason', answer.get('rule', ''))}"
