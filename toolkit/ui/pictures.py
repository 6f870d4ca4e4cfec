"""Geometry of the dashboard's three pictures: a run's phase timeline, a map's Gantt, a stack's resources.

Each function lays its picture out in SVG user units and returns plain shapes;
the templates draw them (and escape every label, which is user data). A Gantt
draws its items as one ``<path>`` per state, not one element per item: a
1,000-item map's page stays small and quick for the browser to lay out; only
the items that went wrong are separate, titled and linked shapes. Times
are seconds since the epoch; the x axis of a timeline or a Gantt spans from the
first start to the last end (or now, for what still runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from toolkit.ui.journal import Item

WIDTH = 960
LABEL = 150
"""Left margin for the row labels."""
ROW = 22
GANTT_ROW = 16
MAX_BARS = 2000
"""A Gantt draws at most this many items (the first ones by start); the table lists them all."""
MAX_MARKED = 100
"""A Gantt draws at most this many failed or raised items as their own linked shapes; more go in their path."""
MARKED = ("failed", "raised")

PHASES = {
    "pending": ("prepare", "pending"),
    "waiting": ("wait for a slot", "waiting"),
    "provisioning": ("create stack", "provisioning"),
    "policy": ("preview / policy", "policy"),
    "up": ("provision", "provisioning"),
    "running": ("running", "running"),
    "collecting": ("collect", "collecting"),
    "teardown": ("teardown", "teardown"),
}
"""Phase mark -> (label, css class). Terminal states and "torn down" end the phase before them."""


@dataclass
class Tick:
    x: float
    label: str


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    label: str
    title: str
    href: str = ""


@dataclass
class Shape:
    """Many bars of one class drawn as one SVG path (``d``), with one title for all of them."""

    css: str
    d: str
    title: str


@dataclass
class Lane:
    y: float
    label: str


@dataclass
class Picture:
    width: float
    height: float
    bars: list[Bar] = field(default_factory=list)
    shapes: list[Shape] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    note: str = ""


def _ticks(start: float, span: float, x0: float, scale: float, height: float) -> list[Tick]:
    """About six ticks at a round step, labelled in seconds (or minutes) since ``start``."""
    steps = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
    step = next((s for s in steps if span / s <= 8), steps[-1])
    ticks, moment = [], 0.0
    while moment <= span + 1e-9:
        label = f"{moment:g}s" if step < 60 else f"{moment / 60:g}m" if step < 3600 else f"{moment / 3600:g}h"
        ticks.append(Tick(x0 + moment * scale, label))
        moment += step
    return ticks


def _seconds(value: float) -> str:
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s" if value < 600 else f"{value / 60:.1f}m"


def timeline(marks: Sequence[tuple[str, float]], now: float, ended: bool) -> Picture:
    """The run's phases as consecutive bars on one row: each lasts until the next mark (or now)."""
    if not marks:
        return Picture(WIDTH, ROW + 24, note="no phases recorded")
    start = marks[0][1]
    end = marks[-1][1] if ended else max(now, marks[-1][1])
    span = max(end - start, 1e-3)
    scale = (WIDTH - LABEL - 10) / span
    picture = Picture(WIDTH, ROW * 2 + 28)
    picture.lanes.append(Lane(ROW, "phases"))
    for (phase, at), following in zip(marks, [*marks[1:], None], strict=True):
        if phase not in PHASES:
            continue  # a terminal state or "torn down": an instant that ends the phase before it
        until = following[1] if following else end
        label, css = PHASES[phase]
        duration = max(until - at, 0.0)
        picture.bars.append(Bar(
            x=LABEL + (at - start) * scale, y=ROW * 0.5, width=max(duration * scale, 1.0), height=ROW,
            css=f"phase-{css}", label=label if duration * scale > 60 else "", title=f"{label}: {_seconds(duration)}",
        ))
    picture.ticks = _ticks(start, span, LABEL, scale, picture.height)
    return picture


def gantt(items: Sequence[Item], now: float, link: Callable[[Item], str] | None = None) -> Picture:
    """A map's items over time, one lane per worker (or pod): a path per state, and each failed or raised
    item (up to ``MAX_MARKED``) as its own bar, titled with its error and linked by ``link``."""
    timed = sorted((item for item in items if item.started is not None), key=lambda item: item.started or 0.0)
    note = ""
    if len(timed) > MAX_BARS:
        note = f"the first {MAX_BARS} of {len(timed)} started items are drawn"
        timed = timed[:MAX_BARS]
    if not timed:
        return Picture(WIDTH, 40, note="no item has started yet")
    workers = sorted({item.worker or "?" for item in timed}, key=_natural)
    lane_of = {worker: number for number, worker in enumerate(workers)}
    start = min(item.started or 0.0 for item in timed)
    end = max((item.finished or now) for item in timed)
    span = max(end - start, 1e-3)
    scale = (WIDTH - LABEL - 10) / span
    height = GANTT_ROW * len(workers) + 30
    picture = Picture(WIDTH, height, note=note)
    picture.lanes = [Lane(GANTT_ROW * (number + 0.75), f"worker {worker}") for worker, number in lane_of.items()]
    pieces: dict[str, list[str]] = {}
    for item in timed:
        began = item.started or start
        until = item.finished or now
        x, y = LABEL + (began - start) * scale, GANTT_ROW * lane_of[item.worker or "?"] + 2
        width = max((until - began) * scale, 1.5)
        if item.state in MARKED and len(picture.bars) < MAX_MARKED:
            picture.bars.append(Bar(
                x=x, y=y, width=width, height=GANTT_ROW - 4, css=f"item-{item.state}", label="",
                title=f"item {item.index}: {item.state}, {_seconds(until - began)}"
                + (f" - {item.error}" if item.error else ""),
                href=link(item) if link else "",
            ))
        else:
            pieces.setdefault(item.state, []).append(f"M{x:.1f} {y:.1f}h{width:.1f}v{GANTT_ROW - 4}h{-width:.1f}z")
    for state, drawn in pieces.items():
        picture.shapes.append(Shape(f"item-{state}", "".join(drawn), f"{len(drawn)} {state} item{'s' * (len(drawn) != 1)}"))
    picture.ticks = _ticks(start, span, LABEL, scale, height)
    return picture


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 30, text)


@dataclass
class Node:
    x: float
    y: float
    width: float
    label: str
    kind: str
    status: str
    parent_x: float | None = None
    parent_y: float | None = None


NODE_HEIGHT = 26
INDENT = 28


def resource_tree(resources: Sequence[tuple[str, str, str | None, str]]) -> tuple[list[Node], float]:
    """``(urn, type, parent urn, status)`` as a tree under the stack: one row per resource, indented by
    depth, with an elbow from each parent. Returns the nodes and the picture's height."""
    children: dict[str | None, list[tuple[str, str, str | None, str]]] = {}
    known = {urn for urn, _, _, _ in resources}
    for resource in resources:
        parent = resource[2] if resource[2] in known else None
        children.setdefault(parent, []).append(resource)
    nodes: list[Node] = []
    position: dict[str, tuple[float, float]] = {}

    def place(parent: str | None, depth: int) -> None:
        for urn, type_, _, status in children.get(parent, []):
            x, y = 8 + depth * INDENT, 6 + len(nodes) * (NODE_HEIGHT + 6)
            name = urn.rsplit("::", 1)[-1]
            above = position.get(parent) if parent else None
            width = 24 + 6.6 * (len(name) + len(type_) + len(status) + 2)
            nodes.append(Node(x, y, min(WIDTH - x - 8, width), name, type_, status,
                              above[0] + 10 if above else None, above[1] + NODE_HEIGHT if above else None))
            position[urn] = (x, y)
            place(urn, depth + 1)

    place(None, 0)
    return nodes, 12 + len(nodes) * (NODE_HEIGHT + 6)
