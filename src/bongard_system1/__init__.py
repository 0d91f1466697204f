"""bongard-system1: the fast perception stage ("System 1") of a Bongard-LOGO solver.

Subpackages: ``logo`` (the LOGO action language, a headless renderer and a sampler),
``data`` (dataset generation, COCO files, the training dataset), ``pipeline`` (checkpointed stages).
Modules: ``model``, ``train``, ``evaluate``, ``predict``, ``baseline``, ``cli``.
"""

__version__ = "0.1.0"

STYLES = ("normal", "zigzag", "circle", "square", "triangle")
STROKE_TYPES = ("line", "arc")
