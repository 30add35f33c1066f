"""The table: one row per measurement, our figure with the raw one beside it (each the
median of the runs, the spread in brackets), their ratio computed run by run (both were
measured in the same run), and the target it is held to. A row is added with one Row
here and one function that adds its figures."""

import statistics
from dataclasses import dataclass, field


@dataclass
class Results:
    """Figures by name, one value per run."""

    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)

    def update(self, figures: dict[str, float]) -> None:
        for name, value in figures.items():
            self.add(name, value)


@dataclass(frozen=True, slots=True)
class Target:
    """A bound on ours / beside ("ratio"), ours - beside ("difference") or ours."""

    on: str  # "ratio", "difference" or "value"
    bound: float
    at_most: bool = False

    def text(self, unit: str) -> str:
        sign = "<=" if self.at_most else ">="
        if self.on == "ratio":
            return f"ours/beside {sign} {self.bound:g}x"
        what = "ours - beside" if self.on == "difference" else "ours"
        return f"{what} {sign} {self.bound:g}{unit}"

    def met(self, ratio: float, difference: float, value: float) -> bool:
        figure = {"ratio": ratio, "difference": difference, "value": value}[self.on]
        return figure <= self.bound if self.at_most else figure >= self.bound


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    ours: str | None  # a figure's name; None (or no figure): `note` says why
    beside: str = ""  # the figure it is compared with ("" for none)
    beside_name: str = ""  # what that figure is
    unit: str = "/s"
    scale: float = 1.0  # figures are divided by this before display (bytes -> MiB)
    digits: int = 0
    targets: tuple[Target, ...] = ()
    note: str = ""


HEADER = ["| Measurement | Ours | Beside it (same run) | Ours vs beside | Target | |",
          "|---|---|---|---|---|---|"]  # fmt: skip


def render(rows: list[Row], results: Results) -> list[str]:
    """The table as Markdown lines."""
    return HEADER + [_line(row, results) for row in rows]


def _line(row: Row, results: Results) -> str:
    goals = "; ".join(t.text(row.unit) for t in row.targets) or "reported"
    beside = results.figures.get(row.beside, [])
    beside_text = f"{row.beside_name}: {_figure(row, beside)}" if beside else ""
    ours = results.figures.get(row.ours or "", [])
    if not ours:
        return _cells(row.name, row.note, beside_text, "", goals, "")
    comparison = ""
    ratio = difference = 0.0
    if beside:
        ratios = [o / b for o, b in zip(ours, beside, strict=True)]
        differences = [o - b for o, b in zip(ours, beside, strict=True)]
        ratio, difference = statistics.median(ratios), statistics.median(differences)
        comparison = _spread(ratios, 2, "x")
        if any(t.on == "difference" for t in row.targets):
            comparison += f"; {_spread(differences, row.digits, row.unit, row.scale)}"
    value = statistics.median(ours) / row.scale
    met = [t.met(ratio, difference / row.scale, value) for t in row.targets]
    verdict = "" if not met else "ok" if all(met) else "**missed**"
    return _cells(row.name, _figure(row, ours), beside_text, comparison, goals, verdict)


def _cells(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _figure(row: Row, values: list[float]) -> str:
    return _spread(values, row.digits, row.unit, row.scale)


def _spread(values: list[float], digits: int, unit: str, scale: float = 1.0) -> str:
    """The median, and the range over the runs when there were several."""
    scaled = [v / scale for v in values]
    text = f"{statistics.median(scaled):,.{digits}f}{unit}"
    if len(scaled) > 1:
        text += f" ({min(scaled):,.{digits}f} to {max(scaled):,.{digits}f})"
    return text
