"""`pipeline`: status, pending entries, dead letters, bulk dispatch, consumer cleanup.

Reads the services' environment (REDIS_URL, REDIS_USERNAME, REDIS_PASSWORD(_FILE),
STREAM, GROUP, DEAD_LETTER_STREAM, CLAIM_IDLE_MS) and, for `dispatch`, DISPATCHER_URL
and DISPATCH_TOKEN(_FILE). Errors are one line on stderr and exit code 2.
"""

import argparse
import sys
import urllib.parse

import redis
from rich.console import Console

from cli.commands import run_dead, run_pending, run_prune, run_status
from cli.dispatching import dispatch_file
from cli.settings import CliError, Settings, environment

COMMANDS = {"status": run_status, "pending": run_pending, "dead": run_dead,
            "dispatch": dispatch_file, "consumers": run_prune}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser(
        "status", help="the stream, group, consumers and Redis at a glance"
    )
    status.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (2) until Ctrl-C")  # fmt: skip
    pending = sub.add_parser("pending", help="pending entries, oldest first")
    pending.add_argument("--consumer", help="only this consumer's")
    pending.add_argument(
        "--min-idle-ms", type=int, default=0, help="only entries idle this long"
    )
    pending.add_argument(
        "--count", type=int, default=100, help="at most this many (100)"
    )
    _dead_parsers(sub)
    dispatch = sub.add_parser(
        "dispatch", help="send a JSONL file of payloads, in batches"
    )
    dispatch.add_argument("task", help="the task every line is a payload of")
    dispatch.add_argument(
        "--payloads", required=True, metavar="FILE", help="JSONL file, or -"
    )
    dispatch.add_argument(
        "--batch", type=int, default=100, help="payloads a request (100)"
    )
    dispatch.add_argument("--restart", action="store_true", help="ignore FILE.progress")
    housekeeping = sub.add_parser("consumers", help="consumer housekeeping")
    actions = housekeeping.add_subparsers(dest="action", required=True)
    prune = actions.add_parser("prune", help="remove idle consumers holding nothing")
    prune.add_argument(
        "--idle-ms", type=int, default=3_600_000, help="idle at least (1 h)"
    )
    prune.add_argument("--dry-run", action="store_true", help="only list them")
    for command in (status, pending, dispatch, prune):
        command.add_argument("--json", action="store_true", help="JSON for scripts")
    return top


def _dead_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    actions = sub.add_parser("dead", help="dead letters: list, show, replay, purge")
    dead = actions.add_subparsers(dest="action", required=True)
    show = dead.add_parser("show", help="one dead letter, with its payload")
    show.add_argument("id")
    chosen = []
    for action, text in (("list", "dead letters with reason and deliveries"),
                         ("replay", "put dead letters back on the stream"),
                         ("purge", "delete dead letters for good")):  # fmt: skip
        parser = dead.add_parser(action, help=text)
        if action != "list":
            parser.add_argument("ids", nargs="*", metavar="ID", help="dead-letter IDs")
            parser.add_argument("--all", action="store_true", help="every dead letter")
        parser.add_argument("--task", help="only this task's")
        parser.add_argument("--error", help="only those whose error contains this text")
        chosen.append(parser)
    chosen[1].add_argument(
        "--dry-run", action="store_true", help="only show what would move"
    )
    chosen[2].add_argument("--yes", action="store_true", help="no confirmation prompt")
    for parser in (show, *chosen):
        parser.add_argument("--json", action="store_true", help="JSON for scripts")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    try:
        settings = environment()
        return COMMANDS[args.command](args, settings, Console())
    except CliError as error:
        return fail(str(error))
    except redis.AuthenticationError:
        user = settings.redis_username or "default"
        return fail(f"Redis refused user {user}: check REDIS_USERNAME and "
                    "REDIS_PASSWORD (or REDIS_PASSWORD_FILE)")  # fmt: skip
    except redis.exceptions.NoPermissionError as error:
        user = settings.redis_username or "default"
        return fail(
            f"Redis user {user} may not do this ({error}): use the operator user"
        )
    except (redis.ConnectionError, redis.TimeoutError) as error:
        where = urllib.parse.urlsplit(settings.redis_url).netloc.rpartition("@")[2]
        return fail(
            f"cannot reach Redis at {where} ({error}): is it running? check REDIS_URL"
        )
    except KeyboardInterrupt:
        return 130


def fail(message: str) -> int:
    print(f"pipeline: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
