"""The console's actions: replay or purge dead letters, prune a consumer. Each is a
POST carrying the session's CSRF token (checked in auth), from an operator; the first
POST shows what would happen, the confirmed one does it, logs who did what to how
many, and sends back to the list (POST-redirect-GET: a reload repeats nothing).
The work itself is pipeline_core's, exactly as `pipeline` does it."""

import logging
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, request, url_for
from werkzeug.wrappers.response import Response as BaseResponse

from dispatcher.console import data
from dispatcher.console.pages import PRUNE_IDLE_MS, dead_filter
from dispatcher.console.views import render
from dispatcher.settings import Settings
from pipeline_core import consumers, dead_letters
from pipeline_core.connection import Client
from pipeline_core.wire import ENTRY_ID

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
        chosen, complete, back = _chosen_letters(client, settings)
        if not _confirmed():
            return _confirm("replay", len(chosen), complete, back)
        moved = dead_letters.replay(client, queue, chosen)
        _log(
            "replay", len(moved), chosen=len(chosen), **dead_filter(request.form).args()
        )
        ids = ", ".join(m["entry_id"] for m in moved[:SHOWN_IDS])
        more = "" if len(moved) <= SHOWN_IDS else ", …"
        flash(
            f"Replayed {len(moved)} onto {queue.stream!r} as new entries: {ids}{more}."
        )
        _say_what_is_left(len(chosen) - len(moved), complete)
        return redirect(back, 303)

    @console.post("/dead/purge")
    def purge() -> Answer:
        chosen, complete, back = _chosen_letters(client, settings)
        if not _confirmed():
            return _confirm("purge", len(chosen), complete, back)
        removed = dead_letters.purge(client, queue, chosen)
        _log("purge", removed, chosen=len(chosen), **dead_filter(request.form).args())
        flash(f"Purged {removed} dead letters for good.")
        _say_what_is_left(len(chosen) - removed, complete)
        return redirect(back, 303)


def _install_prune(console: Blueprint, settings: Settings, client: Client) -> None:
    @console.post("/consumers/prune")
    def prune() -> Answer:
        name = request.form.get("consumer", "")
        if not name:
            abort(400, "Say which consumer to prune.")
        if not _confirmed():
            back = url_for("console.consumers_page")
            return render("confirm", action="prune", consumer=name, back=back)
        pruned = consumers.prune(client, settings.queue, [name], PRUNE_IDLE_MS)
        _log("prune", len(pruned), consumer=name)
        if pruned:
            flash(f"Pruned consumer {name!r}.")
        else:
            flash(f"Kept {name!r}: it holds pending entries or was active lately.")
        return redirect(url_for("console.consumers_page"), 303)


def _chosen_letters(
    client: Client, settings: Settings
) -> tuple[list[dict[str, Any]], bool, str]:
    """The dead letters a form names: by ID (checked boxes, one letter's page), or
    every letter matching its filter (scope=matching; no filter: all). Also whether
    that is all of them, and where to go back to."""
    wanted = dead_filter(request.form)
    back = url_for("console.dead", **wanted.args())
    ids = [i for i in request.form.getlist("ids") if ENTRY_ID.fullmatch(i)]
    if ids:
        # replay and purge skip letters gone meanwhile: nothing to read first
        return [{"dead_id": i} for i in ids[: data.ACTION_LIMIT]], True, back
    if request.form.get("scope") != "matching":
        abort(400, "Say which dead letters: tick some, or act on every match.")
    chosen, complete = data.matching_letters(client, settings.queue, wanted)
    return chosen, complete, back


def _confirmed() -> bool:
    return request.form.get("confirmed") == "1"


def _confirm(action: str, count: int, complete: bool, back: str) -> str:
    """The confirmation step: the same form again, with confirmed=1."""
    return render(
        "confirm", action=action, count=count, complete=complete, back=back,
        wanted=dead_filter(request.form), ids=request.form.getlist("ids"),
        limit=data.ACTION_LIMIT,
    )  # fmt: skip


def _say_what_is_left(gone: int, complete: bool) -> None:
    if gone > 0:
        flash(f"{gone} were gone already (replayed or purged meanwhile).")
    if not complete:
        flash(f"More match than {data.ACTION_LIMIT:,}: repeat to go on.")


def _log(action: str, count: int, **facts: Any) -> None:
    who = g.console_user.who
    log.info(
        "console action", extra={"who": who, "action": action, "count": count, **facts}
    )
