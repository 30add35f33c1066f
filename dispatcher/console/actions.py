"""The console's actions: replay or purge dead letters, prune a consumer. Each is a
POST carrying the session's CSRF token (checked by signin.refusal), from an operator;
the first POST shows what would happen, the confirmed one does it, logs who did what
to how many, and sends back to the list (POST-redirect-GET: a reload repeats
nothing). The work itself is pipeline_core's, exactly as `pipeline` does it, over
every partition with PARTITIONS > 1 (a dead letter's ID: p<partition>-<entry ID>)."""

import logging
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, request, url_for
from werkzeug.wrappers.response import Response as BaseResponse

from dispatcher.console import data
from dispatcher.console.pages import PRUNE_IDLE_MS, dead_filter
from dispatcher.console.views import render
from dispatcher.settings import Settings
from pipeline_core import all_partitions, dead_partitions, partitions
from pipeline_core.connection import Client
from pipeline_core.keys import Queue

log = logging.getLogger(__name__)

Answer = BaseResponse | str
SHOWN_IDS = 10  # new entry IDs named in the message after a replay


def install(console: Blueprint, settings: Settings, client: Client) -> None:
    _install_dead_actions(console, settings, client)
    _install_prune(console, settings, client)


def _install_dead_actions(
    console: Blueprint, settings: Settings, client: Client
) -> None:
    queue = settings.queue

    @console.post("/dead/replay")
    def replay() -> Answer:
        chosen = _chosen_letters(client, settings)
        if not _confirmed():
            return _confirm("replay", chosen)
        moved = dead_partitions.replay(client, queue, chosen.letters)
        _log("replay", len(moved), len(chosen.letters))
        flash(_replayed(moved, queue))
        return _back("replay", chosen, len(chosen.letters) - len(moved))

    @console.post("/dead/purge")
    def purge() -> Answer:
        chosen = _chosen_letters(client, settings)
        if not _confirmed():
            return _confirm("purge", chosen)
        removed = dead_partitions.purge(client, queue, chosen.letters)
        _log("purge", removed, len(chosen.letters))
        flash(f"Purged {removed} dead letters for good.")
        return _back("purge", chosen, len(chosen.letters) - removed)


def _install_prune(console: Blueprint, settings: Settings, client: Client) -> None:
    @console.post("/consumers/prune")
    def prune() -> Answer:
        name = request.form.get("consumer", "")
        if not name:
            abort(400, "Say which consumer to prune.")
        if not _confirmed():
            back = url_for("console.consumers_page")
            return render("confirm", action="prune", consumer=name, back=back)
        pruned = all_partitions.prune(client, settings.queue, [name], PRUNE_IDLE_MS)
        _log("prune", len(pruned), 1, consumer=name)
        if pruned:
            flash(f"Pruned consumer {name!r}.")
        else:
            flash(f"Kept {name!r}: it holds pending entries or was active lately.")
        return redirect(url_for("console.consumers_page"), 303)


def _chosen_letters(client: Client, settings: Settings) -> data.Chosen:
    """The dead letters a form names: by ID (ticked boxes, one letter's page), or
    every letter matching its filter (scope=matching; no filter: all), from its
    cursor `after` on."""
    queue = settings.queue
    ids = [i for i in request.form.getlist("ids") if partitions.is_id(queue, i)]
    if ids:
        # replay and purge skip letters gone meanwhile: nothing to read first
        return data.Chosen([{"dead_id": i} for i in ids[: data.ACTION_LIMIT]])
    if request.form.get("scope") != "matching":
        abort(400, "Say which dead letters: tick some, or act on every match.")
    after = request.form.get("after") or None
    if after is not None and not partitions.is_id(queue, after):
        abort(400, "after must be an entry ID")
    wanted = dead_filter(request.form)
    return data.matching_letters(client, queue, wanted, after)


def _confirmed() -> bool:
    return request.form.get("confirmed") == "1"


def _confirm(action: str, chosen: data.Chosen) -> str:
    """The confirmation step: the same form again, with confirmed=1."""
    wanted = dead_filter(request.form)
    return render(
        "confirm", action=action, chosen=chosen, wanted=wanted,
        ids=request.form.getlist("ids"), after=request.form.get("after"),
        back=url_for("console.dead", **wanted.args()),
        limit=data.ACTION_LIMIT, budget=data.ACTION_SCAN_BUDGET,
    )  # fmt: skip


def _back(action: str, chosen: data.Chosen, gone: int) -> BaseResponse:
    """To the list, offering to go on where this action stopped."""
    if gone > 0:
        flash(f"{gone} were gone already (replayed or purged meanwhile).")
    wanted = dead_filter(request.form).args()
    if chosen.next_after is not None:
        flash(f"Stopped after {chosen.next_after}: more may match beyond it.")
        wanted |= {"go_on": chosen.next_after, "go_on_action": action}
    return redirect(url_for("console.dead", **wanted), 303)


def _replayed(moved: list[dict[str, str]], queue: Queue) -> str:
    shown = ", ".join(m["entry_id"] for m in moved[:SHOWN_IDS])
    more = ", …" if moved[SHOWN_IDS:] else ""
    onto = repr(queue.stream) if queue.partitions == 1 else "their partitions' streams"
    return f"Replayed {len(moved)} onto {onto} as new entries: {shown}{more}."


def _log(action: str, count: int, chosen: int, **facts: Any) -> None:
    facts |= dead_filter(request.form).args() | {"chosen": chosen}
    who = g.console_user.who
    extra = {"who": who, "action": action, "count": count, **facts}
    log.info("console action", extra=extra)
