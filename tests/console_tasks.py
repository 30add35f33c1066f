"""A task with a bug and its fix, for the console's browser story: it fails, naming
`note` in its error, until the file `flag` exists; then it returns `note`."""

from pathlib import Path

from consumer import task


@task
def fixable(flag: str, note: str) -> str:
    if not Path(flag).exists():
        raise RuntimeError(f"{note}: the fix is not deployed yet")
    return note
