"""`pipeline dispatch`: a JSONL file of payloads, posted to the dispatcher in batches,
with a progress bar, a summary, and a resume point after the last accepted line."""

import http.client
import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.settings import CliError, Settings

RETRIES = 5  # for 429 (backlog full) and 503 (Redis down), honouring Retry-After


@dataclass
class Summary:
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    failed: int = 0
    skipped: int = 0  # lines before the resume point
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class Batch:
    lines: list[int]  # the file's line number of each payload (1-based)
    payloads: list[dict[str, Any]]


def progress_file(path: Path) -> Path:
    return path.with_name(path.name + ".progress")


def batches(
    lines: Iterable[str], size: int, start_after: int, summary: Summary
) -> Iterator[Batch]:
    """Batches of payloads with the file line each came from. A line that is not a JSON
    object is refused here, with its number, and left out."""
    batch = Batch([], [])
    for number, line in enumerate(lines, start=1):
        if number <= start_after or not line.strip():
            continue
        payload = _payload(line)
        if payload is None:
            summary.sent += 1
            summary.refused += 1
            summary.reasons[f"line {number}: not a JSON object"] += 1
            continue
        batch.lines.append(number)
        batch.payloads.append(payload)
        if len(batch.payloads) == size:
            yield batch
            batch = Batch([], [])
    if batch.payloads:
        yield batch


def _payload(line: str) -> dict[str, Any] | None:
    try:
        payload = json.loads(line)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


class Poster:
    """One kept-alive HTTP connection to the dispatcher."""

    def __init__(self, settings: Settings) -> None:
        url = urllib.parse.urlsplit(settings.dispatcher_url)
        kind = (
            http.client.HTTPSConnection
            if url.scheme == "https"
            else http.client.HTTPConnection
        )
        self.connection = kind(url.netloc, timeout=60)
        self.prefix = url.path
        self.headers = {"Content-Type": "application/json"}
        if settings.token:
            self.headers["Authorization"] = f"Bearer {settings.token}"

    def close(self) -> None:
        self.connection.close()

    def post(
        self, task: str, payloads: list[dict[str, Any]]
    ) -> tuple[int, dict[str, Any], float]:
        """Status, JSON body, and the Retry-After it asked for (seconds, 0 if none)."""
        body = json.dumps({"task": task, "payloads": payloads})
        try:
            self.connection.request(
                "POST", f"{self.prefix}/dispatch", body, self.headers
            )
            response = self.connection.getresponse()
            answer = json.loads(response.read() or b"{}")
        except (OSError, http.client.HTTPException, ValueError) as error:
            self.connection.close()
            return 0, {"error": f"no answer: {error}"}, 1.0
        return response.status, answer, float(response.getheader("Retry-After") or 0)


def send(poster: Poster, task: str, batch: Batch, summary: Summary) -> bool:
    """Post one batch (retrying 429/503/no answer); True when it was accepted."""
    summary.sent += len(batch.payloads)
    for attempt in range(RETRIES + 1):
        status, answer, retry_after = poster.post(task, batch.payloads)
        if status == 202:
            summary.accepted += len(batch.payloads)
            return True
        if status == 401:
            raise CliError(
                "the dispatcher refused the token: set DISPATCH_TOKEN(_FILE)"
            )
        if 400 <= status < 500 and status != 429:
            summary.refused += len(batch.payloads)
            summary.reasons[_reason(answer, batch)] += len(batch.payloads)
            return False
        if attempt < RETRIES:
            time.sleep(retry_after or 2**attempt)
    summary.failed += len(batch.payloads)
    summary.reasons[f"not accepted after {RETRIES} retries: {answer.get('error')}"] += (
        len(batch.payloads)
    )
    return False


def _reason(answer: dict[str, Any], batch: Batch) -> str:
    """The dispatcher's rule, naming the file's line rather than the batch's index."""
    field_name = answer.get("field")
    rule = answer.get("rule") or answer.get("error")
    if isinstance(field_name, str) and field_name.startswith("payloads["):
        line = batch.lines[int(field_name[len("payloads[") : -1])]
        return f"line {line}: {rule} (its whole batch of {len(batch.lines)} refused)"
    return f"{field_name}: {rule}"
