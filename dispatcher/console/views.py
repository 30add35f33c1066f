"""What every console page shares: rendering, and the formats of numbers and
durations (Jinja filters)."""

from typing import Any

from flask import Blueprint, render_template

# (unit, seconds in it, shown from this many seconds on)
UNITS = (("d", 86400, 86400), ("h", 3600, 3600), ("min", 60, 120))


def render(name: str, **context: Any) -> str:
    """templates/console/<name>.html, autoescaped: payloads and errors stay text."""
    return render_template(f"console/{name}.html", **context)


def duration(seconds: float | None) -> str:
    """A duration read at a glance: 850 ms, 12.5 s, 4 min, 3.2 h, 2.0 d."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    for unit, size, shown_from in UNITS:
        if seconds >= shown_from:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def thousands(value: int) -> str:
    return f"{value:,}"


def install(console: Blueprint) -> None:
    console.add_app_template_filter(duration, "duration")
    console.add_app_template_filter(thousands, "thousands")
