"""Trace LOGO actions the way the original Bongard-LOGO painter moves its turtle, without Tk.

The result is pure geometry in turtle coordinates (800x800 canvas, origin at the centre, y up):
for every action, the pen polylines it draws and the stamps (small filled polygons with an
outline) it leaves. Conventions follow the MIT ``bongard`` package: zigzags of 60-degree teeth
about 17 units apart, stamps every 20 units, arcs drawn as quarter circles with the turtle's
chord approximation, and (with the magnifier effect) teeth, spacing and stamps that grow with
the shape's scaling factor relative to a base of 180.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .actions import Action, PlacedShape

BASE_SCALE = 180.0
ZIGZAG_UNIT = 17.0
STAMP_UNIT = 20.0
ZIGZAG_ANGLE = 60.0
STAMP_OUTLINE = 2.5
# Size of each stamp shape relative to its polygon below (turtle's shapesize).
STAMP_BASE_SIZE = {"circle": 0.75, "square": 0.65, "triangle": 0.8}


def _circle_polygon(n=20, r=10.0):
    return tuple((r * math.cos(2 * math.pi * i / n), r * math.sin(2 * math.pi * i / n)) for i in range(n))


# Stamp polygons in the turtle's own frame: +y points along the heading, +x to its right.
STAMP_POLYGONS = {
    "circle": _circle_polygon(),
    "square": ((10.0, -10.0), (10.0, 10.0), (-10.0, 10.0), (-10.0, -10.0)),
    "triangle": ((10.0, -5.77), (0.0, 11.55), (-10.0, -5.77)),
}


@dataclass
class StrokeTrace:
    """What one action drew: pen polylines and stamps, in turtle coordinates."""

    action: Action
    polylines: list = field(default_factory=list)    # each a list of (x, y)
    stamp_poses: list = field(default_factory=list)  # each (x, y, heading in degrees, style, size)
    start_pose: tuple = (0.0, 0.0, 0.0)                # (x, y, heading) relative to the shape's start
    _stamp_array: np.ndarray | None = field(default=None, repr=False, compare=False)

    def stamp_polygons(self) -> np.ndarray:
        """The stamps as closed polygons, an ``(n, k, 2)`` array (computed once, vectorised)."""
        if self._stamp_array is None:
            self._stamp_array = _stamp_polygons(self.stamp_poses)
        return self._stamp_array


def _stamp_polygons(poses) -> np.ndarray:
    """Stamp polygons of one stroke (all its stamps share the action's style), in drawing order."""
    if not poses:
        return np.zeros((0, 0, 2))
    sel = np.array([(x, y, h, size) for x, y, h, _, size in poses], dtype=np.float64)
    poly = np.array(STAMP_POLYGONS[poses[0][3]], dtype=np.float64)
    r = np.radians(sel[:, 2])
    e0, e1 = np.cos(r)[:, None], np.sin(r)[:, None]
    size = sel[:, 3:4]
    px, py = poly[None, :, 0], poly[None, :, 1]
    xs = sel[:, 0:1] + size * (e1 * px + e0 * py)
    ys = sel[:, 1:2] + size * (-e0 * px + e1 * py)
    return np.stack([xs, ys], axis=2)


class _Turtle:
    def __init__(self, x, y, heading):
        self.x, self.y, self.h = float(x), float(y), float(heading)
        self.pen = True
        self.trace: StrokeTrace | None = None
        self._line = None

    # pen -----------------------------------------------------------------
    def penup(self):
        self.pen = False
        self._line = None

    def pendown(self):
        self.pen = True

    def _point(self):
        if self._line is None:
            self._line = [(self.x, self.y)]
            self.trace.polylines.append(self._line)

    # motion --------------------------------------------------------------
    def left(self, a):
        self.h += a

    def right(self, a):
        self.h -= a

    def forward(self, d):
        if self.pen:
            self._point()
        r = math.radians(self.h)
        self.x += d * math.cos(r)
        self.y += d * math.sin(r)
        if self.pen:
            self._line.append((self.x, self.y))

    def circle(self, radius, extent=360.0):
        """Turtle's circle: a regular polygon of chords, centre ``radius`` to the left."""
        frac = abs(extent) / 360.0
        steps = 1 + int(min(11 + abs(radius) / 6.0, 59.0) * frac)
        w = extent / steps
        w2 = 0.5 * w
        chord = 2.0 * radius * math.sin(math.radians(w2))
        if radius < 0:
            chord, w, w2 = -chord, -w, -w2
        self.left(w2)
        for _ in range(steps):
            self.forward(chord)
            self.left(w)
        self.left(-w2)

    def stamp(self, style, size):
        self.trace.stamp_poses.append((self.x, self.y, self.h, style, size))


def _count(total, unit):
    n = int(total // unit)
    if total / unit - n >= 0.5:
        n += 1
    return max(n, 1)


def _line(t: _Turtle, action: Action, scale: float, magnify: bool):
    dist = action.size * scale
    style = action.style
    if style == "normal":
        t.forward(dist)
        return
    if style == "zigzag":
        unit = ZIGZAG_UNIT * (scale / BASE_SCALE if magnify else 1.0)
        n = _count(abs(dist), unit)
        step = dist / n
        for _ in range(n):
            t.left(ZIGZAG_ANGLE)
            t.forward(step / 2)
            t.right(2 * ZIGZAG_ANGLE)
            t.forward(step)
            t.left(2 * ZIGZAG_ANGLE)
            t.forward(step / 2)
            t.right(ZIGZAG_ANGLE)
        return
    size = STAMP_BASE_SIZE[style] * (scale / BASE_SCALE if magnify else 1.0)
    unit = STAMP_UNIT * (scale / BASE_SCALE if magnify else 1.0)
    t.penup()
    n = _count(abs(dist), unit)
    step = abs(dist) / n
    t.stamp(style, size)
    for _ in range(n):
        t.forward(step)
        t.stamp(style, size)
    t.forward(dist - step * n)
    t.stamp(style, size)
    t.pendown()


def _small_arc(t: _Turtle, angle, radius, style, scale, magnify):
    mag = scale / BASE_SCALE if magnify else 1.0
    if style == "normal":
        t.circle(radius, angle)
        return
    if style == "zigzag":
        per_step = ZIGZAG_UNIT / (2 * math.pi * radius) * 360.0 * mag
        n = _count(abs(angle), per_step)
        alpha = abs(angle) / n / 2
        side = 2 * radius * math.sin(math.radians(alpha / 2))
        z = ZIGZAG_ANGLE
        if angle >= 0:
            for _ in range(n):
                t.right(z - alpha / 2); t.forward(side)
                t.left(180 - z); t.forward(side)
                t.left(alpha); t.forward(side)
                t.right(180 - z); t.forward(side)
                t.left(z + alpha / 2)
        else:
            for _ in range(n):
                t.right(z + alpha / 2); t.forward(-side)
                t.left(180 - z); t.forward(-side)
                t.right(alpha); t.forward(-side)
                t.right(180 - z); t.forward(-side)
                t.left(z - alpha / 2)
        return
    size = STAMP_BASE_SIZE[style] * mag
    per_step = STAMP_UNIT / (2 * math.pi * radius) * 360.0 * mag
    t.penup()
    n = _count(abs(angle), per_step)
    ave = abs(angle) / n
    t.stamp(style, size)
    sign = 1.0 if angle >= 0 else -1.0
    for _ in range(n):
        t.circle(radius, sign * ave)
        t.stamp(style, size)
    # The original then turns a full circle of a tiny radius: no visible effect.
    t.stamp(style, size)
    t.pendown()


def _arc(t: _Turtle, action: Action, scale: float, magnify: bool):
    angle = action.arc_degrees
    radius = action.size * scale
    if radius <= 0 or angle == 0:
        return
    sign = 1.0 if angle > 0 else -1.0
    full, rest = divmod(abs(angle), 90.0)
    for _ in range(int(full)):
        _small_arc(t, sign * 90.0, radius, action.style, scale, magnify)
    if rest > 0:
        _small_arc(t, sign * rest, radius, action.style, scale, magnify)


def trace_shape(shape: PlacedShape, magnify: bool = True) -> list[StrokeTrace]:
    """Trace every action of a placed shape; returns one StrokeTrace per action.

    Coordinates are relative to the shape's start point (the turtle starts at (0, 0) with the
    shape's orientation): add ``shape.start`` for canvas coordinates. The trace depends only on the
    actions, orientation, scale and magnifier, so it is kept on the shape (``shape.extra``) for
    those: the sampler tries many start points, and the renderer reuses the trace.
    """
    key = (shape.orientation, shape.scale, magnify)
    cached = shape.extra.get("_trace")
    if cached is not None and cached[0] == key:
        return cached[1]
    traces = _trace(shape, magnify)
    shape.extra["_trace"] = (key, traces)
    return traces


def _trace(shape: PlacedShape, magnify: bool) -> list[StrokeTrace]:
    t = _Turtle(0.0, 0.0, shape.orientation)
    out = []
    for action in shape.actions:
        t.left(action.turn_degrees)
        trace = StrokeTrace(action=action, start_pose=(t.x, t.y, t.h))
        t.trace = trace
        t._line = None
        if action.kind == "line":
            _line(t, action, shape.scale, magnify)
        else:
            _arc(t, action, shape.scale, magnify)
        out.append(trace)
    return out
