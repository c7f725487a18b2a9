"""Instance-index masks -> tight, occlusion-aware pixel boxes and visible pixel counts.

A mask is an (H, W) integer array: 0 = background, ``i + 1`` = the scene's object ``i``. A box is
``[x1, y1, x2, y2]`` in pixel edges (``x2 = last column + 1``), so it contains exactly the visible pixels.
"""

from __future__ import annotations

import numpy as np


def visible_counts(mask: np.ndarray, n_objects: int) -> np.ndarray:
    """Visible pixel count per object: (n_objects,) int."""
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=n_objects + 1)
    return counts[1:n_objects + 1]


def mask_box(mask: np.ndarray, index: int) -> list[int] | None:
    """Bounding box of the pixels equal to ``index`` (``i + 1`` for object ``i``); None if none visible."""
    ys, xs = np.nonzero(mask == index)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def union_box(a: list[int] | None, b: list[int] | None) -> list[int] | None:
    """Smallest box holding both (either may be None)."""
    if a is None or b is None:
        return a if b is None else b
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def box_region(boxes: list[list[float]], width: int, height: int, dilate: int = 0) -> np.ndarray:
    """Boolean (H, W) map of the pixels inside any of ``boxes`` grown by ``dilate`` pixels."""
    region = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        xa, ya = max(0, int(np.floor(x1)) - dilate), max(0, int(np.floor(y1)) - dilate)
        xb, yb = min(width, int(np.ceil(x2)) + dilate), min(height, int(np.ceil(y2)) + dilate)
        region[ya:yb, xa:xb] = True
    return region
