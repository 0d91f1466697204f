"""LOGO actions and one-stroke shapes, with the original Bongard-LOGO action strings.

A line action is written ``line_<style>_<length>-<turn>`` and an arc action
``arc_<style>_<radius>_<angle>-<turn>``. Every number is normalised to [0, 1] with three decimals:
length and radius are fractions of the shape's scaling factor, the arc angle maps [-360, 360]
degrees onto [0, 1] and the turn (applied before the stroke, left positive) maps [-180, 180] onto
[0, 1]. Actions keep the normalised numbers as written, so strings round-trip exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .. import STROKE_TYPES, STYLES
from ..errors import System1Error

_NUM = r"([0-9]+(?:\.[0-9]+)?)"   # ASCII digits only: \d would take any Unicode digit
_LINE_RE = re.compile(rf"^line_([a-z]+)_{_NUM}-{_NUM}$")
_ARC_RE = re.compile(rf"^arc_([a-z]+)_{_NUM}_{_NUM}-{_NUM}$")


def _unit(value: float, what: str, text: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise System1Error(f"bad action string {text!r}: {what} {value} is outside [0, 1]")
    return value


@dataclass(frozen=True)
class Action:
    """One stroke of a one-stroke shape.

    ``kind`` is ``line`` or ``arc``; ``style`` one of normal, zigzag, circle, square, triangle.
    ``size`` is the normalised line length or arc radius; ``arc`` the normalised arc angle
    (0.5 for lines); ``turn`` the normalised turn made before the stroke.
    """

    kind: str
    style: str
    size: float
    turn: float = 0.5
    arc: float = 0.5

    def __post_init__(self):
        if self.kind not in STROKE_TYPES:
            raise System1Error(f"unknown action type {self.kind!r} (expected line or arc)")
        if self.style not in STYLES:
            raise System1Error(f"unknown style {self.style!r} (expected one of {', '.join(STYLES)})")

    @property
    def turn_degrees(self) -> float:
        """Signed turn before the stroke: positive turns left (counter-clockwise)."""
        return self.turn * 360.0 - 180.0

    @property
    def arc_degrees(self) -> float:
        """Signed arc angle: positive arcs bend left."""
        return self.arc * 720.0 - 360.0

    @classmethod
    def line(cls, style: str, length: float, turn_degrees: float = 0.0) -> "Action":
        return cls("line", style, round(length, 3), round((turn_degrees + 180.0) / 360.0, 3))

    @classmethod
    def arc_of(cls, style: str, radius: float, arc_degrees: float, turn_degrees: float = 0.0) -> "Action":
        return cls("arc", style, round(radius, 3), round((turn_degrees + 180.0) / 360.0, 3),
                   round((arc_degrees + 360.0) / 720.0, 3))

    def __str__(self) -> str:
        return format_action(self)


def parse_action(text: str) -> Action:
    """Parse one original action string; raise System1Error on anything malformed."""
    m = _LINE_RE.match(text)
    if m:
        style, size, turn = m.group(1), float(m.group(2)), float(m.group(3))
        if style not in STYLES:
            raise System1Error(f"bad action string {text!r}: unknown style {style!r}")
        return Action("line", style, _unit(size, "length", text), _unit(turn, "turn", text))
    m = _ARC_RE.match(text)
    if m:
        style = m.group(1)
        size, arc, turn = (float(m.group(i)) for i in (2, 3, 4))
        if style not in STYLES:
            raise System1Error(f"bad action string {text!r}: unknown style {style!r}")
        return Action("arc", style, _unit(size, "radius", text), _unit(turn, "turn", text),
                      _unit(arc, "arc angle", text))
    raise System1Error(f"bad action string {text!r}: expected line_<style>_<len>-<turn> "
                       "or arc_<style>_<radius>_<angle>-<turn>")


def format_action(action: Action) -> str:
    """The original action string of an action."""
    if action.kind == "line":
        return f"line_{action.style}_{action.size:.3f}-{action.turn:.3f}"
    return f"arc_{action.style}_{action.size:.3f}_{action.arc:.3f}-{action.turn:.3f}"


def parse_program(strings) -> tuple[Action, ...]:
    return tuple(parse_action(s) for s in strings)


@dataclass
class PlacedShape:
    """A one-stroke shape placed on the 800x800 turtle canvas (turtle coordinates, y up)."""

    actions: tuple[Action, ...]
    start: tuple[float, float] = (0.0, 0.0)
    orientation: float = 0.0          # degrees, counter-clockwise from east
    scale: float = 180.0              # the scaling factor: turtle units per unit length
    name: str = "freeform"
    extra: dict = field(default_factory=dict)

    @property
    def program(self) -> list[str]:
        return [format_action(a) for a in self.actions]
