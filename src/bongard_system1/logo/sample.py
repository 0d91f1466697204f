"""Random Bongard-LOGO images: free-form and procedurally built basic shapes, placed and scaled.

The sampler never reads real Bongard-LOGO data. It draws

* free-form shapes as the original generator's free-form sampler builds them: 2 to 9 actions made
  of moves (a line of length 1, a quarter arc of radius 0.5, a right angle, a triangle, a square,
  a half or whole circle), each move continuing straight on from the last one, every stroke's
  style drawn uniformly from the five, now and then one turn changed (as its negative examples are);
* basic shapes built in code in the manner of the original's human-designed shapes: regular
  polygons, rectangles, circles and arcs, sectors, closed half circles, lenses, plus-sign outlines, stars,
  open polylines, S curves, funnels, polygons with a side split in two, and random mixed chains of
  lines and arcs. As in the original, every arc has radius 0.5 (a shape's size is its scale) and a
  shape is either all `normal` or has each stroke's style drawn uniformly from the five; two strokes
  that meet with no mark in the ink (the same type and style, straight on) are joined into one, as
  the real set's basic shapes never have them;

and places 1 to ``max_shapes`` of them at a random start point, orientation and scale. Everything
comes from one ``numpy.random.Generator``: the same seed gives the same images.
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
# The free-form turns the original chooses from when it changes a direction.
TURNS = np.array([0.0, 30.0, -30.0, 60.0, -60.0, 90.0, -90.0, 120.0, -120.0, 150.0, -150.0])
# Free-form action counts: the original's free-form problems hold one shape of 4 to 9 actions or two
# of (3, 3), (2, 5), (3, 4), (3, 5), (4, 4), (4, 5); these are the counts per shape that implies.
FREEFORM_COUNTS = np.arange(2, 10)
FREEFORM_COUNT_WEIGHTS = np.array([1, 4, 5, 4, 1, 1, 1, 1], dtype=float) / 18.0
# The least extent (larger side, in units of the scale) of a free-form shape of n actions.
FREEFORM_MIN_SPREAD = {2: 0.5, 3: 0.85, 4: 0.95, 5: 0.95, 6: 1.15, 7: 1.35, 8: 1.55, 9: 1.75}
FREEFORM_TURN_CHANGE = 0.05     # share of free-form strokes whose turn is changed (negative examples)
ALL_NORMAL = 0.5                # share of basic shapes drawn all `normal` (the original's non-stampable ones)
# Share of shapes drawn free-form; the rest are basic shapes. The original dataset holds 3,600 free-form
# problems of 12,000 (the other 8,400 are basic-shape and abstract ones, built from human-designed
# shapes), and the detector finds strokes of basic shapes worst, on synthetic images as on real ones.
FREEFORM_SHARE = 0.3
# Turns between the strokes of basic shapes (right angles most, then the angles of common polygons)
# and arc angles: rough weights, set after counting the turns and arc angles in the action programs
# of the development real set's basic and abstract shapes (its only use here; no program is copied).
# No turn of 180 degrees: the real set's are all between arcs (S shapes, see _s_curve); after a line
# it draws the next line back over the last one.
BASIC_TURNS = np.array([90.0, -90.0, 120.0, -120.0, 135.0, -135.0, 45.0, -45.0, 60.0, -60.0,
                        150.0, -150.0, 0.0])
BASIC_TURN_WEIGHTS = np.array([6, 2, 2, 1.5, 1.5, 1, 1, 1, 1, 1, 1, 1, 1])
BASIC_TURN_WEIGHTS = BASIC_TURN_WEIGHTS / BASIC_TURN_WEIGHTS.sum()
ARC_ANGLES = np.array([45.0, 60.0, 75.0, 90.0, 120.0, 180.0, 270.0])
ARC_ANGLE_WEIGHTS = np.array([0.5, 2, 0.5, 3, 1.5, 1.5, 0.6])
ARC_ANGLE_WEIGHTS = ARC_ANGLE_WEIGHTS / ARC_ANGLE_WEIGHTS.sum()
RADIUS = 0.5                    # every arc of the original's shapes
CANVAS_LIMIT = 360.0   # the original painter rejects shapes that leave [-360, 360]^2


def _any_style(rng):
    return str(STYLES[int(rng.integers(len(STYLES)))])


def _turn(rng):
    return float(rng.choice(TURNS))


def _basic_turn(rng):
    return float(rng.choice(BASIC_TURNS, p=BASIC_TURN_WEIGHTS))


def _arc_angle(rng):
    return float(rng.choice(ARC_ANGLES, p=ARC_ANGLE_WEIGHTS)) * float(rng.choice([1.0, -1.0]))


# ---------------------------------------------------------------- free-form shapes
def _move(rng, name, style_of):
    """One free-form move, as the original's: every move starts straight on (turn 0)."""
    L, A = Action.line, Action.arc_of
    if name == "line":
        return [L(style_of(), 1.0)]
    if name == "arc":
        return [A(style_of(), RADIUS, 90.0)]
    if name == "corner":
        return [L(style_of(), 1.0), L(style_of(), 1.0, 90.0)]
    if name == "triangle":
        return [L(style_of(), 1.0), L(style_of(), 1.0, 120.0), L(style_of(), 1.0, 120.0)]
    if name == "square":
        return [L(style_of(), 1.0)] + [L(style_of(), 1.0, 90.0) for _ in range(3)]
    if name == "semicircle":
        return [A(style_of(), RADIUS, 90.0), A(style_of(), RADIUS, 90.0)]
    return [A(style_of(), RADIUS, 90.0) for _ in range(4)]      # circle


_MOVES = {"line": 1, "arc": 1, "corner": 2, "semicircle": 2, "triangle": 3, "square": 4, "circle": 4}


def _freeform_actions(rng, n):
    style_of = lambda: _any_style(rng)  # noqa: E731
    actions: list[Action] = []
    while len(actions) < n:
        fits = [m for m, k in _MOVES.items() if k <= n - len(actions)]
        actions.extend(_move(rng, str(rng.choice(fits)), style_of))
    return actions[:n]


def _spread(actions) -> float:
    """The larger side of the extent of ``actions`` drawn at scale 1."""
    ext = _extent(PlacedShape(tuple(actions), (0.0, 0.0), 0.0, 100.0, "freeform"))
    return 0.0 if ext is None else float((ext[1] - ext[0]).max()) / 100.0


def freeform(rng, n_actions=None):
    n = int(n_actions or rng.choice(FREEFORM_COUNTS, p=FREEFORM_COUNT_WEIGHTS))
    # Like the original, draw again (up to 100 times) a shape that folds onto itself: its extent must
    # exceed a minimum that grows with the number of actions.
    for _ in range(100):
        actions = _freeform_actions(rng, n)
        if _spread(actions) > FREEFORM_MIN_SPREAD[n]:
            break
    for i in range(1, n):               # a changed direction, as in the original's negative examples
        if rng.random() < FREEFORM_TURN_CHANGE:
            a = actions[i]
            actions[i] = Action(a.kind, a.style, a.size, round((_turn(rng) + 180.0) / 360.0, 3), a.arc)
    return actions, "freeform"


# ---------------------------------------------------------------- basic shapes
def _polygon(rng, style_of, sides=None):
    n = int(sides or rng.integers(3, 9))
    side = float(np.clip(2.0 / n, 0.2, 1.0))
    return [Action.line(style_of(), side, 0.0 if i == 0 else 360.0 / n) for i in range(n)], f"polygon{n}"


def _split_polygon(rng, style_of):
    """A polygon with one or two sides drawn as two strokes in line (turn 0 between them)."""
    n = int(rng.integers(3, 7))
    side = float(np.clip(2.0 / n, 0.3, 1.0))
    split = set(rng.choice(n, size=int(rng.integers(1, 3)), replace=False).tolist())
    acts = []
    for i in range(n):
        turn = 0.0 if i == 0 else 360.0 / n
        if i in split:
            f = float(rng.uniform(0.3, 0.7))
            acts += [Action.line(style_of(), side * f, turn), Action.line(style_of(), side * (1 - f), 0.0)]
        else:
            acts.append(Action.line(style_of(), side, turn))
    return acts, f"split_polygon{n}"


def _rectangle(rng, style_of):
    w, h = float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.2, 0.8))
    return [Action.line(style_of(), s, 0.0 if i == 0 else 90.0) for i, s in enumerate((w, h, w, h))], "rectangle"


def _circle(rng, style_of):
    parts = int(rng.choice([1, 2, 3, 4, 4, 6]))
    return [Action.arc_of(style_of(), RADIUS, 360.0 / parts) for _ in range(parts)], "circle"


def _arc(rng, style_of):
    return [Action.arc_of(style_of(), RADIUS, _arc_angle(rng))], "arc"


def _sector(rng, style_of):
    ang = float(rng.choice([60.0, 90.0, 120.0, 180.0, 270.0]))
    return [Action.line(style_of(), RADIUS), Action.arc_of(style_of(), RADIUS, ang, 90.0),
            Action.line(style_of(), RADIUS, 90.0)], f"sector{int(ang)}"


def _half_circle(rng, style_of):
    return [Action.line(style_of(), 2 * RADIUS), Action.arc_of(style_of(), RADIUS, 180.0, 90.0)], "closed_semi_circle"


def _lens(rng, style_of):
    """Two arcs that meet at two corners (a leaf or lens)."""
    a = float(rng.choice([60.0, 90.0, 120.0]))
    return [Action.arc_of(style_of(), RADIUS, a), Action.arc_of(style_of(), RADIUS, a, 180.0 - a)], "lens"


def _cross(rng, style_of):
    """The outline of a plus sign: twelve sides, each arm a left, a left and a right turn."""
    a = float(rng.uniform(0.2, 0.4))
    turns = [0.0] + [(90.0, 90.0, -90.0)[i % 3] for i in range(11)]
    return [Action.line(style_of(), a, t) for t in turns], "cross"


def _star(rng, style_of):
    n = int(rng.choice([5, 7]))
    turn = 180.0 - 180.0 / n
    side = float(rng.uniform(0.6, 1.0))
    return [Action.line(style_of(), side, 0.0 if i == 0 else turn) for i in range(n)], f"star{n}"


def _open_polyline(rng, style_of):
    n = int(rng.integers(2, 7))
    return [Action.line(style_of(), float(rng.uniform(0.2, 0.9)), 0.0 if i == 0 else _basic_turn(rng))
            for i in range(n)], "open_polyline"


def _chain(rng, style_of):
    """A chain of 2 to 9 lines and arcs with the turns of drawn figures (right angles most)."""
    n = int(rng.integers(2, 10))
    acts = []
    for i in range(n):
        turn = 0.0 if i == 0 else _basic_turn(rng)
        if rng.random() < 0.2:
            acts.append(Action.arc_of(style_of(), RADIUS, _arc_angle(rng), turn))
        else:
            acts.append(Action.line(style_of(), float(rng.uniform(0.2, 1.0)), turn))
    return acts, "chain"


def _s_curve(rng, style_of):
    """Two arcs bending opposite ways. The second turns about first (180 degrees), as the S shapes of
    the real set's programs do: without the turn it would run back over the first arc."""
    ang = float(rng.choice([60.0, 90.0, 120.0, 180.0]))
    return [Action.arc_of(style_of(), RADIUS, ang), Action.arc_of(style_of(), RADIUS, -ang, 180.0)], "s_curve"


def _triangle_arc(rng, style_of):
    return [Action.line(style_of(), 1.0), Action.line(style_of(), 1.0, 120.0),
            Action.arc_of(style_of(), RADIUS, 180.0, 120.0)], "triangle_arc"


def _funnel(rng, style_of):
    """An open funnel: a sloping side, the spout's side, its end, its other side, the other slope."""
    a, b, c = float(rng.uniform(0.4, 0.8)), float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.15, 0.3))
    bend = float(rng.choice([30.0, 45.0]))
    return [Action.line(style_of(), a), Action.line(style_of(), b, -bend), Action.line(style_of(), c, 90.0),
            Action.line(style_of(), b, 90.0), Action.line(style_of(), a, -bend)], "funnel"


_BASIC = [_polygon, _split_polygon, _rectangle, _circle, _arc, _sector, _half_circle, _lens, _cross, _star,
          _open_polyline, _s_curve, _triangle_arc, _funnel]
CHAIN_SHARE = 0.3               # share of basic shapes that are random chains; the rest are the figures above


def hides_joint(prev: Action, action: Action) -> bool:
    """Whether nothing in the ink marks where ``prev`` ends and ``action`` begins: the same type and
    style, straight on (turn 0), and for arcs the same radius and bend."""
    return (action.kind == prev.kind and action.style == prev.style and abs(action.turn_degrees) < 1e-6
            and (action.kind == "line" or (action.size == prev.size
                                           and (action.arc_degrees > 0) == (prev.arc_degrees > 0))))


def join_hidden_joints(actions: list[Action]) -> list[Action]:
    """Join each pair of strokes whose joint nothing in the ink marks (:func:`hides_joint`): one stroke
    of the same type and style continuing the last straight on, an arc also with the same radius and bend.

    Two normal lines in line are one line to the eye, so where they are labelled as two strokes the
    place of the joint cannot be learned. The development real set's basic and abstract shapes have no
    such joint (0 of 4,121 strokes; its free-form shapes 12%, which the free-form sampler keeps, as
    the original's does). A joined line is at most 1 long and a joined arc at most a whole circle,
    the largest the action language writes.
    """
    out = [actions[0]]
    for a in actions[1:]:
        p = out[-1]
        if not hides_joint(p, a):
            out.append(a)
        elif a.kind == "line":
            out[-1] = replace(p, size=round(min(1.0, p.size + a.size), 3))
        else:
            bend = float(np.clip(p.arc_degrees + a.arc_degrees, -360.0, 360.0))
            out[-1] = replace(p, arc=round((bend + 360.0) / 720.0, 3))
    return out


def basic(rng):
    if rng.random() < ALL_NORMAL:
        style_of = lambda: "normal"  # noqa: E731
    else:
        style_of = lambda: _any_style(rng)  # noqa: E731
    if rng.random() < CHAIN_SHARE:
        actions, name = _chain(rng, style_of)
    else:
        actions, name = _BASIC[int(rng.integers(len(_BASIC)))](rng, style_of)
    return join_hidden_joints(actions), name


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


def layout_in_slots(programs, scale: float, pen_width: float, gap: float = 12.0):
    """Place shapes given as action tuples side by side on the canvas, none touching another.

    The canvas is cut into a grid of equal slots, one a shape in order (row by row); each shape, at
    orientation 0, is centred in its slot. A shape too large for its slot at ``scale`` is drawn at
    the largest scale that fits (its extent, with the pen, inside the slot less ``gap``). Returns the
    ``PlacedShape`` list; shapes that draw nothing are centred at their slot's centre. Deterministic.
    """
    n = len(programs)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    side = 2.0 * CANVAS_LIMIT
    slot_w, slot_h = side / cols, side / rows
    room = np.array([slot_w - gap - pen_width, slot_h - gap - pen_width])
    placed = []
    for k, actions in enumerate(programs):
        centre = np.array([-CANVAS_LIMIT + slot_w * (k % cols + 0.5), CANVAS_LIMIT - slot_h * (k // cols + 0.5)])
        s = float(scale)
        ext = _extent(PlacedShape(tuple(actions), (0.0, 0.0), 0.0, s))
        for _ in range(8):          # the extent is nearly linear in the scale (stamps and teeth grow too)
            if ext is None:
                break
            fit = float(np.min(room / np.maximum(ext[1] - ext[0], 1e-9)))
            if fit >= 1.0:
                break
            s *= fit * 0.995
            ext = _extent(PlacedShape(tuple(actions), (0.0, 0.0), 0.0, s))
        start = centre if ext is None else centre - (ext[0] + ext[1]) / 2.0
        placed.append(PlacedShape(tuple(actions), (float(start[0]), float(start[1])), 0.0, s))
    return placed


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
            if rng.random() < FREEFORM_SHARE:
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
