"""Random Bongard-LOGO images: free-form and procedurally built basic shapes, placed and scaled.

The sampler never reads real Bongard-LOGO data. It draws

* free-form shapes: 2 to 9 actions built from small moves (a line, an arc, a corner, a triangle,
  a square, a half or whole circle), as the original free-form problems are, with random turns;
* basic shapes built in code: regular polygons, rectangles, circles and arcs, sectors, closed
  half circles, crosses, stars, open polylines, S curves, spirals and zigzag or stamped outlines;

and places 1 to ``max_shapes`` of them at a random start point, orientation and scale, with a mix
of stroke styles. Everything comes from one ``numpy.random.Generator``: the same seed gives the
same images.
"""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import chain

import numpy as np

from .. import STYLES
from .actions import Action, PlacedShape
from .turtle_trace import trace_shape

# Shape scales (the painter's scaling factor; 180 is its base) of the original generator's dataset
# scripts: free-form problems (80, 140), basic-shape problems (150, 260), abstract ones (150, 320); all
# with the magnifier effect, so stamps and zigzag teeth shrink and grow with the shape. Our basic
# shapes stand for both basic-shape and abstract problems, so they take the wider range.
FREEFORM_SCALES = (80.0, 140.0)
BASIC_SCALES = (150.0, 320.0)
STYLE_WEIGHTS = np.array([0.40, 0.15, 0.15, 0.15, 0.15])   # normal, zigzag, circle, square, triangle
TURNS = np.array([0.0, 30.0, -30.0, 60.0, -60.0, 90.0, -90.0, 120.0, -120.0, 150.0, -150.0])
CANVAS_LIMIT = 360.0   # the original painter rejects shapes that leave [-360, 360]^2


def _style(rng, fixed=None):
    if fixed is not None:
        return fixed
    return str(rng.choice(STYLES, p=STYLE_WEIGHTS))


def _turn(rng):
    if rng.random() < 0.8:
        return float(rng.choice(TURNS))
    return float(rng.uniform(-180.0, 180.0))


# ---------------------------------------------------------------- free-form shapes
def _move(rng, name, style_of):
    """One free-form move: a few actions; the first carries no turn of its own."""
    L, A = Action.line, Action.arc_of
    if name == "line":
        return [L(style_of(), float(rng.choice([1.0, 1.0, 0.7, 0.5])))]
    if name == "arc":
        return [A(style_of(), 0.5, float(rng.choice([90.0, -90.0, 180.0, -180.0])))]
    if name == "corner":
        return [L(style_of(), 1.0), L(style_of(), 1.0, 90.0)]
    if name == "triangle":
        return [L(style_of(), 1.0), L(style_of(), 1.0, 120.0), L(style_of(), 1.0, 120.0)]
    if name == "square":
        return [L(style_of(), 1.0)] + [L(style_of(), 1.0, 90.0) for _ in range(3)]
    if name == "semicircle":
        return [A(style_of(), 0.5, 90.0), A(style_of(), 0.5, 90.0)]
    return [A(style_of(), 0.5, 90.0) for _ in range(4)]      # circle


_MOVES = {"line": 1, "arc": 1, "corner": 2, "semicircle": 2, "triangle": 3, "square": 4, "circle": 4}


def freeform(rng, n_actions=None):
    n = int(n_actions or rng.integers(2, 10))
    style_of = lambda: _style(rng)  # noqa: E731
    actions: list[Action] = []
    while len(actions) < n:
        fits = [m for m, k in _MOVES.items() if k <= n - len(actions)]
        move = _move(rng, str(rng.choice(fits)), style_of)
        first = move[0]
        move[0] = Action(first.kind, first.style, first.size, round((_turn(rng) + 180.0) / 360.0, 3), first.arc)
        actions.extend(move)
    return actions[:n], "freeform"


# ---------------------------------------------------------------- basic shapes
def _polygon(rng, style_of, sides=None):
    n = int(sides or rng.integers(3, 9))
    side = float(np.clip(2.0 / n, 0.2, 1.0))
    return [Action.line(style_of(), side, 0.0 if i == 0 else 360.0 / n) for i in range(n)], f"polygon{n}"


def _rectangle(rng, style_of):
    w, h = float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.2, 0.8))
    return [Action.line(style_of(), s, 0.0 if i == 0 else 90.0) for i, s in enumerate((w, h, w, h))], "rectangle"


def _circle(rng, style_of):
    r = float(rng.uniform(0.25, 0.5))
    if rng.random() < 0.5:
        return [Action.arc_of(style_of(), r, 90.0) for _ in range(4)], "circle"
    return [Action.arc_of(style_of(), r, 360.0)], "circle"


def _arc(rng, style_of):
    r = float(rng.uniform(0.25, 0.6))
    ang = float(rng.choice([45.0, 90.0, 135.0, 180.0, 225.0, 270.0])) * float(rng.choice([1, -1]))
    return [Action.arc_of(style_of(), r, ang)], "arc"


def _sector(rng, style_of):
    r = float(rng.uniform(0.3, 0.6))
    ang = float(rng.choice([60.0, 90.0, 120.0, 180.0, 270.0]))
    return [Action.line(style_of(), r), Action.arc_of(style_of(), r, ang, 90.0),
            Action.line(style_of(), r, 90.0)], f"sector{int(ang)}"


def _half_circle(rng, style_of):
    r = float(rng.uniform(0.25, 0.5))
    return [Action.line(style_of(), 2 * r), Action.arc_of(style_of(), r, 180.0, 90.0)], "closed_semi_circle"


def _cross(rng, style_of):
    a = float(rng.uniform(0.2, 0.5))
    acts = [Action.line(style_of(), a)]
    for i in range(7):
        acts.append(Action.line(style_of(), a, 180.0 if i % 2 == 0 else 90.0))
    return acts, "cross"


def _star(rng, style_of):
    n = int(rng.choice([5, 7]))
    turn = 180.0 - 180.0 / n
    side = float(rng.uniform(0.6, 1.0))
    return [Action.line(style_of(), side, 0.0 if i == 0 else turn) for i in range(n)], f"star{n}"


def _open_polyline(rng, style_of):
    n = int(rng.integers(2, 7))
    return [Action.line(style_of(), float(rng.uniform(0.2, 0.8)), 0.0 if i == 0 else _turn(rng))
            for i in range(n)], "open_polyline"


def _s_curve(rng, style_of):
    r = float(rng.uniform(0.2, 0.4))
    ang = float(rng.choice([90.0, 180.0]))
    return [Action.arc_of(style_of(), r, ang), Action.arc_of(style_of(), r, -ang)], "s_curve"


def _spiral(rng, style_of):
    acts, r = [], float(rng.uniform(0.1, 0.2))
    for _ in range(int(rng.integers(3, 7))):
        acts.append(Action.arc_of(style_of(), min(r, 1.0), 90.0))
        r *= float(rng.uniform(1.2, 1.5))
    return acts, "spiral"


def _triangle_arc(rng, style_of):
    s = float(rng.uniform(0.4, 0.9))
    return [Action.line(style_of(), s), Action.line(style_of(), s, 120.0),
            Action.arc_of(style_of(), s / 2, 180.0, 120.0)], "triangle_arc"


def _funnel(rng, style_of):
    a, b = float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.2, 0.5))
    return [Action.line(style_of(), a), Action.line(style_of(), b, 45.0), Action.line(style_of(), b, -135.0),
            Action.line(style_of(), b, -90.0), Action.line(style_of(), b, -135.0), Action.line(style_of(), a, 45.0)], \
        "funnel"


_BASIC = [_polygon, _rectangle, _circle, _arc, _sector, _half_circle, _cross, _star, _open_polyline,
          _s_curve, _spiral, _triangle_arc, _funnel]


def basic(rng):
    fixed = None
    r = rng.random()
    if r < 0.45:
        fixed = "normal"
    elif r < 0.8:
        fixed = _style(rng)            # one style for the whole outline
    style_of = lambda: _style(rng, fixed)  # noqa: E731
    return _BASIC[int(rng.integers(len(_BASIC)))](rng, style_of)


# ---------------------------------------------------------------- placement
def _extent(shape: PlacedShape):
    """The (lo, hi) corners of everything the shape draws, relative to its start point, or None."""
    traces = trace_shape(shape)
    parts = [a.reshape(-1, 2) for a in (tr.stamp_polygons() for tr in traces) if a.size]
    lines = [seq for tr in traces for seq in tr.polylines]
    if lines:
        parts.append(np.fromiter(chain.from_iterable(chain.from_iterable(lines)), np.float64).reshape(-1, 2))
    if not parts:
        return None
    a = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return a.min(axis=0), a.max(axis=0)


def _place(rng, actions, name, scale_range, others, touch):
    """A placement of ``actions`` inside the canvas (and, unless ``touch``, clear of ``others``).

    Each scale and orientation is traced once; start points are then tried by moving its extent
    (the trace does not depend on the start). The scale shrinks a little with every new try.
    """
    lo_s, hi_s = scale_range
    margin = 6.0
    for attempt in range(30):
        scale = float(rng.uniform(lo_s, hi_s)) * (0.94 ** attempt)
        shape = PlacedShape(tuple(actions), (0.0, 0.0), float(rng.uniform(0.0, 360.0)), scale, name)
        ext = _extent(shape)
        if ext is None:
            return None
        rlo, rhi = ext
        for _ in range(6):
            if others and not touch:
                start = rng.uniform(-300.0, 300.0, 2)
            else:
                radius, theta = float(rng.uniform(0, 250.0)), float(rng.uniform(0, 2 * math.pi))
                start = np.array([radius * math.cos(theta), radius * math.sin(theta)])
            lo, hi = rlo + start, rhi + start
            if lo.min() < -CANVAS_LIMIT + margin or hi.max() > CANVAS_LIMIT - margin:
                continue
            if others and not touch and any(_overlap(lo, hi, o) for o in others):
                continue
            return replace(shape, start=(float(start[0]), float(start[1]))), (lo, hi)
    return None


def _overlap(lo, hi, other, gap=12.0):
    olo, ohi = other
    return not (hi[0] + gap < olo[0] or ohi[0] + gap < lo[0] or hi[1] + gap < olo[1] or ohi[1] + gap < lo[1])


def sample_image(rng: np.random.Generator, max_shapes: int = 3) -> tuple[list[PlacedShape], float]:
    """One random image: its placed shapes and the pen width (turtle units)."""
    n = int(rng.integers(1, max_shapes + 1))
    touch = n > 1 and rng.random() < 0.3          # let shapes touch and cross now and then
    shapes, extents = [], []
    for _ in range(n):
        for _try in range(10):
            if rng.random() < 0.5:
                actions, name = freeform(rng)
                scale_range = FREEFORM_SCALES
            else:
                actions, name = basic(rng)
                scale_range = BASIC_SCALES
            if n > 1:
                scale_range = (scale_range[0], scale_range[1] * (0.95 if n == 2 else 0.8))
            placed = _place(rng, actions, name, scale_range, extents, touch)
            if placed is not None:
                shapes.append(placed[0])
                extents.append(placed[1])
                break
    pen = float(rng.uniform(6.5, 10.0))
    return shapes, pen
