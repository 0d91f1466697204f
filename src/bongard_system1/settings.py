"""Constants that decide what a stage produces, kept in one light module (no torch, no OpenCV) so
the pipeline can put them in its stage configs and ``status`` stays fast.

* ``DATA_FORMAT_VERSION``: bumped whenever the generator draws differently, so that datasets drawn
  before are redrawn, not mixed or reused. 2: stamp outlines with a sub-pixel band; 3: the original
  generator's shape scales (``logo.sample``); 4: the original's free-form moves and style
  choice, every arc of radius 0.5, more figures among the basic shapes; 5: 30% of shapes
  free-form (``logo.sample.FREEFORM_SHARE``), the original dataset's mix; 6: strokes of a basic
  shape that meet with no mark in the ink are joined into one (``logo.sample.join_hidden_joints``).
* Inference: images are resized for the network to its test size, by default 1.15x the training
  size rounded to a multiple of 32 (480 px for a model trained at 416). Measured side by side on one
  model trained at 416 px: real strokes AP 0.536 -> 0.569, and synthetic validation AP (all
  categories, the network's own boxes) 0.565 -> 0.583 at 480 px; 512 px was no better than 480.
* ``TEST_VIEWS``, ``FUSE_IOU``: at inference the network sees the image and, by default, three
  mirror images of it (up to all eight symmetries with ``--views``), and their detections are fused
  (see ``views``): real strokes AP 0.634 -> 0.666 with four views, at four times the network's time.
* ``INFERENCE_AMP``: the network runs under autocast at inference where the device multiplies bf16
  fast (CUDA, CPUs with AMX or AVX-512 BF16; ``precision``): measured on one model with four views on
  every fourth real image, 3.0x faster on an AMX CPU (208 against 620 ms an image) with the same AP.
* ``STROKE_SNAP_INSIDE``, ``STROKE_SNAP_OUTSIDE``: stroke boxes meet the ink (``predict.snap_stroke_to_ink``):
  each edge moves to the outermost ink among that many pixel lines inside and outside it, unless the
  ink runs on past that band (where a stroke meets its neighbour the ink does not mark the end).
  Chosen on 400 synthetic validation images (strokes AP 0.677 -> 0.695 at 4 and 1; 2 and 1: 0.694,
  8 and 1: 0.695, 4 and 0: 0.690, 4 and 2: 0.689), then checked on the real set: 0.675 -> 0.697.
* ``HYBRID_CONFIDENT``: the network score from which the hybrid shape boxes split an ink component
  into the shapes the network sees in it (chosen on synthetic validation images; see ``predict``).
  ``HYBRID_WHOLE``: ... unless the network also sees the whole component as one shape with at least
  this score. Chosen on the 400 synthetic validation images with two models' outputs (8 and 5
  epochs; shapes AP 0.8882 -> 0.8891 and 0.8764 -> 0.8791 at 0.45 to 0.55, 0.8891 and 0.8757 at 0.6),
  then checked on the real set: 0.9898 -> 0.9923 and 0.9842 -> 0.9883.
  ``HYBRID_PARTS_MIN``: the network's boxes that match a component (IoU >= 0.5) are dropped as
  duplicates of it, except where the network sees two or more distinct shapes inside the component
  scored at least this and did not split it: those stay, below every component (0.05 + 0.2 x
  the network's score, with the network's other leftovers), since a shape that touches a smaller one can match their joint
  component. Chosen on the 400 synthetic validation images with two models' outputs (shapes AP
  0.8891 -> 0.8962 and 0.8791 -> 0.8852; on the 63 images whose shapes touch 0.413 -> 0.441 and
  0.383 -> 0.410; 0.2 and 0.4 within 0.003 of 0.3), then checked on the real set: 0.9923 -> 0.9950
  (bd 0.9912 -> 0.9941) and 0.9883 -> 0.9895.
* ``STAMP_VOTE_DETECTOR_WEIGHT``: in the stamp vote (``stamps``), the weight of the detector's own
  normalised stamp-style scores against the patch classifier's mean vote (on 400 synthetic ring-stamp
  images at 512 px, style 89.72, 89.81, 90.18, 89.89 and 88.39% at 0.25, 0.5, 1, 2 and 4).
* ``STAMP_VOTE_LINE_HOLES``, ``STAMP_VOTE_LINE_DISTANCE``: a line stroke the detector calls normal or
  zigzag is re-read by the vote when at least that many stamp holes lie within that distance of
  the line; an arc so called, when at least ``STAMP_VOTE_ARC_HOLES`` holes lie in its box (all three
  chosen on synthetic images, see ``stamps``). ``STAMP_VOTE_LINE_SPAN``: and those holes must spread
  over at least that fraction of the line (holes bunched at one end are a neighbour's). A line the
  detector calls stamped is read from the holes along it alone when it has that many.
* ``STAMP_HOLE_MAX_AREA``: the largest white speck (in pixels, at 512 px) the stamp vote takes for
  the hole inside a stamp, in training and at inference. Stamps grow with a shape's scale, and at
  the scales of basic shapes the holes of circle and square stamps pass 60 px (the earlier limit,
  which left out 17% of the real set's circle holes, 10% of its square holes and 2% of its triangle
  holes, so that large stamps were read from their triangles and their neighbours'). Chosen on the
  400 synthetic validation images with the 2026-11-29 quick model's outputs (style 82.0, 84.5, 85.5, 83.9
  and 84.0% at 60, 100, 150, 200 and 250), then checked on the real set: 94.4 -> 96.1%.
* ``STAMP_VOTE_VERSION`` (in the training stage's config) and ``STAMP_VOTE_RULES`` (in the
  evaluation stage's): a change of the vote's network retrains it; a change of the rules that read
  it re-evaluates.
* ``RESCORER_VERSION`` (in the training stage's config): the rescorer's features, target or
  network (``rescore``); a change retrains the rescorer, not the detector. Version 2 (2026-12-07):
  the mean of five nets trained from different seeds, where version 1 had one. Version 3 (2026-12-07):
  five more nets, trained in the same pass, re-rank the hybrid's shapes (``rescore_shapes``).
* ``PARSE_MIN_SCORE``, ``GROUPING_VERSION`` (in the evaluation stage's config): ``System1.parse``
  keeps the shapes and strokes scored this or more, adds lower-scored strokes that fill gaps (ink of
  a kept shape that no kept stroke's box covers), and puts each stroke in a shape by the rule of
  ``grouping``; the evaluation stage scores those parses, so a change of either re-evaluates. The
  score was chosen on the 400 synthetic validation images, with a weak model (one epoch at 416 px,
  with its stamp vote and rescorer): shapes found with exactly their strokes 20.4, 25.6, 28.5, 29.6,
  29.0 and 25.7% at 0.2, 0.3, 0.4, 0.5, 0.6 and 0.7 (with every style right too at 0.5: 16.2%;
  without the gap filling, 22.3% at best, at 0.3 and 0.4), then checked on the real set: 19.6,
  23.0, 23.4, 23.2, 22.7, 20.1% (19.6% at best without the filling). The rule was measured on
  ground-truth boxes (see ``grouping``).
"""

DATA_FORMAT_VERSION = 6
IMAGE_SIZE_RANGE = (32, 4096)   # generated and training image sizes (px)
MAX_DATASET_IMAGES = 10_000_000  # images one dataset may hold (about 40 GB of PNGs at 416 px)
TEST_UPSCALE = 1.15
TEST_SIZE_RANGE = (32, 4096)
MAX_TEST_SIZES = 3         # sizes whose views may be fused at inference (--test-size 480,416)
TEST_VIEWS = 4            # views the network sees at inference (1 to MAX_VIEWS)
MAX_VIEWS = 8             # the image's eight symmetries (views.VIEW_NAMES)
INFERENCE_AMP = True      # inference under bf16 autocast where the device has fast bf16 (see precision)
FUSE_IOU = 0.75           # detections of the views overlapping more than this are one object
HYBRID_CONFIDENT = 0.6
HYBRID_WHOLE = 0.5        # ... but not where the network scores the whole component this high
HYBRID_PARTS_MIN = 0.3    # an unsplit component keeps the network's distinct shapes inside it from this score
STROKE_SNAP_INSIDE = 4    # a stroke box's edge meets ink in the 4 pixel lines inside it (moving at most 3 px in)
STROKE_SNAP_OUTSIDE = 1   # ... or in the 1 line outside it
STAMP_VOTE_DETECTOR_WEIGHT = 1.0
STAMP_VOTE_LINE_HOLES = 3       # a line called normal or zigzag with this many holes along it is re-read
STAMP_VOTE_LINE_DISTANCE = 5.0  # ... holes within this many pixels (at 512 px) of the line
STAMP_VOTE_LINE_SPAN = 0.2      # ... and spread over at least this fraction of its length
STAMP_VOTE_ARC_HOLES = 5        # an arc called normal or zigzag with this many holes in its box is re-read
STAMP_HOLE_MAX_AREA = 150       # stamp holes are white specks of at most this many pixels at 512 px
# the vote's patches, classes or network; a change retrains the vote (2: a plain class; 3: holes up to 150 px;
# 4: a network of half the width, stamps.WIDTH)
STAMP_VOTE_VERSION = 4
# how the vote is read at inference; a change re-evaluates (2: stamped lines read along the line; 3: holes up to 150 px)
STAMP_VOTE_RULES = 3
MIN_STAMP_IMAGES = 50     # a stamp vote from fewer images lacks patches of some stamp style
# the rescorer's features, target or network; a change retrains the rescorer (1: one net; 2: five averaged;
# 3: shape nets too)
RESCORER_VERSION = 3
OVERLAY_MIN_SCORE = 0.3   # overlays (predict --overlay-dir) draw detections scored this or more
PARSE_MIN_SCORE = 0.5     # System1.parse keeps shapes and strokes scored this or more (and strokes that fill gaps)
GROUPING_VERSION = 3      # the rule that puts strokes in shapes (grouping.assign_strokes); 2: ties within 90%,
                          # strokes of shapes not kept left unassigned; 3: lower-scored strokes fill gaps


def default_test_size(image_size: int) -> int:
    """The size images are resized to at inference for a model trained at ``image_size``."""
    return max(32, int(round(image_size * TEST_UPSCALE / 32)) * 32)
