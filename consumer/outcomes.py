"""Outcomes: what becomes of an entry once its turn came. Each is written here once:

ack           result stored and XACK, together (one MULTI per lot, consumer.acks; for
              tiny tasks sent ahead, its reply read during the next batch: settle)
failed        re-queued after its backoff (its retry policy), or dead-lettered
dead_letter   moved to the dead-letter stream with the reason (exactly once)
cancelled     acknowledged unrun: cancelled before it started (DELETE /tasks/<id>)
release       handed back unstarted (on stop) for any consumer to take at once
"""

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from redis.typing import EncodableT

from consumer.acks import ack_commands, store_and_ack
from consumer.errors import TaskTimeoutError
from consumer.in_flight import InFlight
from consumer.message import Message
from consumer.metrics import ConsumerMetrics
from consumer.ownership import Ownership
from consumer.settings import Settings
from consumer.tasks import options_of
from pipeline_core.connection import Client
from pipeline_core.delayed import retry_script, schedule_retry
from pipeline_core.replies import reason
from pipeline_core.task_state import failed_record
from pipeline_core.wire import (
    ATTEMPT_FIELD,
    EXPIRES_FIELD,
    TASK_ID_FIELD,
    as_sent,
    dead_letter_fields,
)

log = logging.getLogger(__name__)

# Why Lua: the dead letter must be written exactly once, and never lost. Only an entry
# still pending is moved (a late or retried attempt, after another consumer finished it,
# finds it gone and writes nothing); a MULTI cannot branch on that read. The XADD comes
# before the XACK: if Redis refuses it (the dead stream's IDs used up by another writer,
# a wrong type), the script stops before the ack and the entry stays pending, not lost.
# Consumers never delete dead letters: the dispatcher trims them by age and counts it
# (dispatcher/housekeeping.py). The task's record learns where its dead letter is
# (pipeline_core/task_state.py), in the same step. KEYS: stream, dead-letter stream, the
# task's results hash. ARGV: group, entry ID, task ID, RESULT_TTL_S, fields...
DEAD_LETTER = """
if not redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)[1] then
  return false
end
local dead_id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[3] .. ':dead', dead_id)
redis.call('EXPIRE', KEYS[3], ARGV[4])
return dead_id
"""
ERROR_LIMIT = 2000  # characters of a failure's text kept in its dead letter


class Outcomes:
    def __init__(
        self,
        client: Client,
        settings: Settings,
        metrics: ConsumerMetrics,
        ownership: Ownership,
        tasks: Mapping[str, Callable[..., Any]],
    ) -> None:
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.ownership = ownership
        self.tasks = tasks
        self._dead_letter = client.register_script(DEAD_LETTER)
        self._retry = retry_script(client)
        self._in_flight = InFlight(client)  # an ack sent ahead
        self._sent: tuple[list[tuple[Message, str]], list[str]] = ([], [])

    def ack(self, done: list[tuple[Message, str]], ahead: bool = False) -> None:
        """Store the results and XACK their entries in one MULTI/EXEC. `ahead`: sent
        without waiting for its reply (consumer.in_flight), read by settle()."""
        if not done:
            return
        self.settle()
        ids = [m.entry_id for m, _ in done]
        taken = self.ownership.taken_over(ids)
        if ahead and self._in_flight.possible:
            commands = ack_commands(self.settings, done)
            with self.ownership.finishing(ids):
                self._in_flight.send(("MULTI",), *commands, ("EXEC",))
            self._sent = (done, taken)
            return
        with self.ownership.finishing(ids):
            try:
                acked = store_and_ack(self.client, self.settings, done)
            except redis.ResponseError as error:
                if reason(error) != "oom":
                    raise
                acked = self._ack_without_results(done)
        self._acked(done, taken, acked)

    @property
    def ack_in_flight(self) -> bool:
        return self._in_flight.outstanding

    def settle(self, arrived: bool = False) -> None:
        """The ack sent ahead, if one is in flight: its reply read, and the rest done
        as ack() does (Redis out of memory: acknowledged without the results).
        `arrived`: only if its reply has arrived (then it is never waited for)."""
        if not self._in_flight.outstanding:
            return
        if arrived and not self._in_flight.arrived():
            return
        done, taken = self._sent
        replies = self._in_flight.collect()
        executed = replies[-1]
        errors = [x for x in replies if isinstance(x, redis.ResponseError)]
        if isinstance(executed, list):
            errors += [x for x in executed if isinstance(x, redis.ResponseError)]
        if not errors:
            self._acked(done, taken, int(executed[-1]))
        elif any(reason(error) == "oom" for error in errors):
            self._acked(done, taken, self._ack_without_results(done))
        else:
            raise errors[0]

    def drop(self) -> None:
        """After a failure: an ack in flight is forgotten. If Redis applied it, it
        holds; if not, its entries are pending and run again once reclaimed."""
        self._in_flight.drop()

    def _acked(
        self, done: list[tuple[Message, str]], taken: list[str], acked: int
    ) -> None:
        # Late: taken over by another consumer meanwhile, or even acknowledged by it
        # already. Harmless: the work is done; it may have run twice, nothing is lost.
        late = max(len(taken), len(done) - acked)
        if late:
            self.metrics.late_acks.inc(late)
            log.warning("late acks of entries taken over", extra={"entry_ids": taken})
        self.metrics.acked([message for message, _ in done], time.time())
        if log.isEnabledFor(logging.DEBUG):
            ids = [m.entry_id for m, _ in done]
            log.debug("messages acked", extra={"entry_ids": ids})

    def _ack_without_results(self, done: list[tuple[Message, str]]) -> int:
        """Redis is out of memory: it refuses the HSET, and with it the whole MULTI,
        but still takes a plain XACK. Draining is what frees memory (acknowledged
        entries get trimmed), so the work is acknowledged and its results dropped,
        counted and logged, rather than held while the outage holds itself up."""
        q = self.settings.queue
        acked = int(self.client.xack(q.stream, q.group, *(m.entry_id for m, _ in done)))
        self.metrics.results_dropped.inc(len(done))
        log.warning("results dropped: redis is out of memory", extra={
            "count": len(done), "first_entry_id": done[0][0].entry_id})  # fmt: skip
        return acked

    def failed(self, message: Message, error: Exception) -> None:
        """The task raised: retried after its backoff (re-queued, holding nothing
        meanwhile) if its policy allows, else dead-lettered with the last error."""
        options = options_of(self.tasks[message.task])
        attempts = message.attempt + message.deliveries  # this one included
        self.metrics.count(message.task, "failed")
        # A hard timeout reads as the builtin it subclasses: TimeoutError.
        kind = "TimeoutError" if isinstance(error, TaskTimeoutError) else None
        text = f"{kind or type(error).__name__}: {error}"
        if not options.retryable(error) or attempts >= options.attempts(self.settings):
            self.dead_letter(message, text, deliveries=attempts)
            return
        wait_s = options.backoff_s_for(self.settings, retry=attempts)
        self.ownership.let_go([message.entry_id])
        due = schedule_retry(
            self._retry,
            self.settings.queue,
            (message.entry_id, message.task_id),
            max(1, round(wait_s * 1000)),
            (self.settings.result_ttl_s, failed_record(attempts, text[:ERROR_LIMIT])),
            retry_fields(message, attempts),
        )
        if due is None:
            return  # finished by another consumer meanwhile: nothing to retry
        self.metrics.count(message.task, "retried")
        facts = {"task_id": message.task_id, "attempts": attempts, "retry_in_s": wait_s}
        log.warning("task failed, will be retried", exc_info=error, extra=facts)

    def unrun(self, messages: list[Message], state: str) -> None:
        """Acknowledge entries without running them: `cancelled` before they started
        (their cancel requests answered), or `expired` (past expires_s)."""
        if not messages:
            return
        store_and_ack(self.client, self.settings, [], messages, state)
        for message in messages:
            task = message.task if message.task in self.tasks else "unknown"
            self.metrics.count(task, state)
        log.info("tasks acknowledged unrun", extra={
            "state": state, "task_ids": [m.task_id for m in messages]})  # fmt: skip

    def dead_letter(
        self, message: Message, error: str, deliveries: int | None = None
    ) -> None:
        """Move an entry to the dead-letter stream with the reason (ack + XADD,
        atomically; nothing is written if the entry was acked already)."""
        s = self.settings
        count = message.deliveries if deliveries is None else deliveries
        fields = dead_letter_fields(
            message.fields,
            message.entry_id,
            error[:ERROR_LIMIT],
            count,
            s.consumer_name,
        )
        # The task's ID goes with it, so a replay keeps it.
        fields.setdefault(TASK_ID_FIELD, message.task_id)
        flat = [as_sent(item) for pair in fields.items() for item in pair]
        task_id = message.task_id
        keys = [
            s.queue.stream,
            s.queue.dead_letter_stream,
            s.queue.results_key(task_id),
        ]
        args: list[EncodableT] = [
            s.queue.group,
            message.entry_id,
            task_id,
            s.result_ttl_s,
            *flat,
        ]
        dead_id = self._dead_letter(keys=keys, args=args)
        if dead_id is None:
            return
        task = message.task if message.task in self.tasks else "unknown"
        self.metrics.count(task, "dead_lettered")
        facts = {"entry_id": message.entry_id, "task": task, "error": fields["error"]}
        log.error("message dead-lettered", extra={**facts, "deliveries": count})

    def release(self, messages: list[Message]) -> int:
        """Hand unstarted entries back: claimable by any consumer at once, their
        delivery uncounted."""
        released = self.ownership.release([m.entry_id for m in messages])
        self.metrics.released.inc(released)
        return released


def retry_fields(message: Message, attempts: int) -> list[EncodableT]:
    """The retry's entry: the task's own fields, its ID (kept) and its attempts so far.
    Its expiry is dropped: it started in time."""
    kept = {ATTEMPT_FIELD, EXPIRES_FIELD, TASK_ID_FIELD}
    fields = [(n, v) for n, v in message.fields.items() if n not in kept]
    fields += [(TASK_ID_FIELD, message.task_id), (ATTEMPT_FIELD, str(attempts))]
    return [as_sent(item) for pair in fields for item in pair]
