"""The dispatcher cut off mid-request: it runs in a network namespace of its own, the
load reaches it through the link and it reaches Redis through the link. Clients send
every request with an Idempotency-Key and retry a timeout, a 5xx or a broken connection
with the same key: every message must be on the stream exactly once."""

import time
from collections.abc import Callable

from chaos import verdicts
from chaos.faults import first_202_after
from chaos.runner import Run
from chaos.stack import STREAM

# Redis holds the writes that arrive (CLIENT PAUSE WRITE) for PAUSE_MS; the fault
# starts HOLD_S into it, so the pause ends under the fault: Redis runs the held
# requests' scripts (entries and key records) and their replies are lost. Without it
# a fault would catch a request between its write and its answer only by luck.
PAUSE_MS, HOLD_S = 500, 0.3
# The dispatcher's SOCKET_TIMEOUT_S here: under the clients' 2 s timeout, so that a
# client the dispatcher still reaches gets its 503.
SOCKET_TIMEOUT_S = 1.0


def dispatcher_partition(run: Run) -> None:
    """The link cut (clients time out or find no route) for longer than the clients'
    timeout, and in full mode than the dispatcher's socket timeout too; then Redis's
    replies alone dropped on the dispatcher's side (clients get 503s). Both with
    writes caught inside Redis as they start."""
    namespace = run.network.namespace
    if namespace is None:
        raise TypeError("the dispatcher-partition scenario needs its namespace")
    port = run.server.port
    run.wait(1.0)
    cut, healed = _with_writes_held(
        run, namespace.cut, namespace.heal, 4.0 if run.quick else 8.0
    )
    run.wait(1.0 if run.quick else 3.0)
    dropped, passed = _with_writes_held(
        run,
        lambda: namespace.drop_replies(port),
        lambda: namespace.pass_replies(port),
        2.0 if run.quick else 4.0,
    )
    run.wait(2.0 if run.quick else 5.0)
    run.report.recovery_s = first_202_after(run, healed)
    run.report.notes |= {"cut s": round(healed - cut, 2),
                         "replies dropped s": round(passed - dropped, 2)}  # fmt: skip


def _with_writes_held(
    run: Run, start: Callable[[], None], end: Callable[[], None], seconds: float
) -> tuple[float, float]:
    """The fault from HOLD_S into a pause of writes, for `seconds`; when it started
    and ended (monotonic)."""
    run.client.client_pause(PAUSE_MS, all=False)  # writes wait; reads still answer
    run.wait(HOLD_S)
    started = time.monotonic()
    start()
    run.wait(seconds)
    end()
    return started, time.monotonic()


def each_message_once(run: Run) -> None:
    """Every request acknowledged in the end (none refused, none left unknown), some
    only after a retry, some of those as a replay of a write whose answer the cut
    lost; the stream was added exactly the messages acknowledged; nothing ran twice."""
    ledger = run.ledger
    retried, replayed = _count_retries(run)
    added = int(run.client.xinfo_stream(STREAM)["entries-added"])
    run.report.notes["entries added"] = added
    if ledger.unknown or ledger.refused:
        run.problem(f"{len(ledger.unknown)} tokens unknown, {len(ledger.refused)} "
                    "refused: every request should end in a 202")  # fmt: skip
    if not retried or not replayed:
        run.problem(f"{retried} requests retried, {replayed} replayed: the faults "
                    "caught no request whose answer they lost")  # fmt: skip
    if not ledger.statuses()["503"]:
        run.problem("no client got a 503 to retry")
    if added != len(ledger.acknowledged):
        run.problem(f"{added} entries added to the stream for "
                    f"{len(ledger.acknowledged)} messages acknowledged")  # fmt: skip
    if run.stack.restarts:
        run.problem(f"consumers exited {run.stack.restarts} times")
    verdicts.no_duplicates(run)


def _count_retries(run: Run) -> tuple[int, int]:
    """Requests sent more than once, and 202s that replayed a first write (noted with
    the 202s a retry got and the most attempts a request took)."""
    answers = run.ledger.answers
    retried = sum(1 for a in answers if a.attempt == 2)  # one per retried request
    replayed = sum(1 for a in answers if a.replayed)
    run.report.notes |= {
        "requests retried": retried,
        "acked on a retry": sum(
            1 for a in answers if a.status == "202" and a.attempt > 1
        ),
        "replayed": replayed,
        "most attempts": max((a.attempt for a in answers), default=0),
    }
    return retried, replayed
