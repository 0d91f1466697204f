"""The image size a trained detector sees at inference (light: no torch, no OpenCV).

Images are resized for the network to its test size: by default 1.15x the training size, rounded
to a multiple of 32 (480 px for a model trained at 416). Measured side by side on one model trained
at 416 px: real strokes AP 0.536 -> 0.569 and synthetic validation AP 0.565 -> 0.583 (all
categories) at 480 px; 512 px was no better than 480 (README).
"""

TEST_UPSCALE = 1.15


def default_test_size(image_size: int) -> int:
    """The size images are resized to at inference for a model trained at ``image_size``."""
    return max(32, int(round(image_size * TEST_UPSCALE / 32)) * 32)
