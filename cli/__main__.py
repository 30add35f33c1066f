"""`pipeline`: status, pending entries, dead letters, bulk dispatch, consumer cleanup,
a task by its ID, tasks waiting to be due.

Reads the services' environment (REDIS_URL, REDIS_USERNAME, REDIS_PASSWORD(_FILE),
STREAM, GROUP, DEAD_LETTER_STREAM, PARTITIONS, CLAIM_IDLE_MS) and, for `dispatch`,
DISPATCHER_URL and DISPATCH_TOKEN(_FILE); beside `make run`, what it recorded in
.run/pipeline.env.
Errors are one line on stderr and exit code 2.
"""

import argparse
import logging
import sys
import urllib.parse

import redis
from redis.exceptions import RedisClusterException
from rich.console import Console

from cli import consumers, dead, delayed, dispatch, pending, status, task
from cli.settings import CliError, Settings, environment
from pipeline_core.connection import describe, redacted
from pipeline_core.dead_letters import NoSuchDeadLetterError
from pipeline_core.env import SettingsError

COMMANDS = (
    status,
    pending,
    dead,
    dispatch,
    consumers,
    task,
    delayed,
)  # each adds its own parser


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    try:
        settings = environment()
        logging.basicConfig(level=settings.log_level, format="pipeline: %(message)s")
        code: int = args.run(args, settings, Console())
        return code
    except (CliError, SettingsError, NoSuchDeadLetterError) as error:
        return fail(str(error))
    except redis.AuthenticationError:
        user = settings.redis.username or "default"
        return fail(f"Redis refused user {user}: check REDIS_USERNAME and "
                    "REDIS_PASSWORD (or REDIS_PASSWORD_FILE)")  # fmt: skip
    except redis.exceptions.NoPermissionError as error:
        user = settings.redis.username or "default"
        return fail(
            f"Redis user {user} may not do this ({error}): use the operator user"
        )
    except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as error:
        where = urllib.parse.urlsplit(redacted(settings.redis.url)).netloc
        check = "REDIS_URL"
        if settings.redis.sentinels:
            where, check = describe(settings.redis), "REDIS_SENTINELS"
        return fail(
            f"cannot reach Redis at {where} ({error}): is it running? check {check}"
        )
    except KeyboardInterrupt:
        return 130


def fail(message: str) -> int:
    print(f"pipeline: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
