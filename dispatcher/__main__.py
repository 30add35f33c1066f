"""`python -m dispatcher`: check the settings, then hand over to gunicorn (a production
server)."""

import os
import sys

from dispatcher.settings import from_env
from pipeline_core.env import SettingsError


def main() -> int:
    try:
        from_env(
            os.environ
        )  # fail here, in one line, rather than inside gunicorn's boot
    except SettingsError as error:
        print(f"dispatcher: {error}", file=sys.stderr)
        return 2
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:dispatcher.gunicorn_conf",
    ]
    os.execv(sys.executable, [*argv, "dispatcher.wsgi:create()"])


if __name__ == "__main__":
    sys.exit(main())
