"""Reading settings from the environment: text, bounded numbers, flags, secrets with
`*_FILE`. Every service refuses a bad value the same way: SettingsError naming it."""

from collections.abc import Mapping
from typing import TypeVar

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
N = TypeVar("N", int, float)


class SettingsError(ValueError):
    """An environment variable holds a value the process cannot use; it stops at
    start with this message."""


def text(env: Mapping[str, str], name: str, default: str) -> str:
    """A non-blank string; an empty or blank value is refused, not defaulted."""
    value = env.get(name, default)
    if not value.strip():
        raise SettingsError(f"{name} must not be empty")
    return value


def optional(env: Mapping[str, str], name: str) -> str | None:
    """A string that may be absent (an empty value means absent)."""
    return env.get(name) or None


def number(
    env: Mapping[str, str],
    name: str,
    kind: type[N],
    default: N,
    low: float,
    high: float = float("inf"),
) -> N:
    """An int or float between low and high (inclusive); unset or empty: default."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if not low <= value <= high:  # NaN fails both comparisons: refused too
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
    return value


def flag(env: Mapping[str, str], name: str, default: bool | None = None) -> bool | None:
    """1/true/yes or 0/false/no (any case); unset or empty: default."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true/false, yes/no), got {raw!r}")


def log_level(env: Mapping[str, str], default: str = "INFO") -> str:
    level = env.get("LOG_LEVEL", default).upper()
    if level not in LOG_LEVELS:
        raise SettingsError(
            f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}"
        )
    return level


def secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (a mounted Secret).
    The value is never part of an error message."""
    path = env.get(f"{name}_FILE")
    if not path:
        return env.get(name) or None
    return read_file(path, f"{name}_FILE").strip() or None


def secret_lines(env: Mapping[str, str], name: str) -> list[str]:
    """A list of secrets: NAME comma-separated, or NAME_FILE one a line; blank lines
    and lines starting with # are left out."""
    path = env.get(f"{name}_FILE")
    if path:
        items = read_file(path, f"{name}_FILE").splitlines()
    else:
        items = env.get(name, "").split(",")
    stripped = (item.strip() for item in items)
    return [item for item in stripped if item and not item.startswith("#")]


def read_file(path: str, name: str) -> str:
    try:
        with open(path, encoding="utf-8") as opened:
            return opened.read()
    except OSError as error:
        raise SettingsError(f"{name}: cannot read {path!r}: {error.strerror}") from None
