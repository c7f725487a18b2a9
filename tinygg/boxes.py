"""Box geometry and the box text format: the one definition shared by data conversion, the processor,
evaluation, the DiG rewards and the data synthesis pipeline.

Frames
------
* **pixel**: ``[x1, y1, x2, y2]`` in the original image's pixels.
* **square**: the image is padded to a ``side x side`` square (``side = max(W, H)``), centred with integer
  offsets exactly as the processor pads it, then coordinates are divided by ``side``: values in [0, 1].
  This is the frame of box *text* (GroundingGPT / Shikra convention).

Box text is ``[x1,y1,x2,y2]`` with three decimals, no spaces; the parser accepts spaces, signs, and any
number of boxes anywhere in a text.

All geometry functions are vectorised and accept numpy arrays or torch tensors of shape ``(..., 4)``.

>>> format_box([0.1, 0.25, 0.5, 1.0])
'[0.100,0.250,0.500,1.000]'
>>> parse_boxes("the cat [0.1, 0.2,0.3,0.4] and [0.5,0.5,0.9,0.9].").tolist()
[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]]
>>> square_geometry(640, 480)
(640, 0, 80)
>>> pixel_to_square([0, 0, 640, 480], 640, 480).tolist()
[0.0, 0.125, 1.0, 0.875]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

try:  # torch is a core dependency, but keep this module importable on its own (data tools, doctests)
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

DECIMALS = 3
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
BOX_PATTERN = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")

ArrayLike = Any  # np.ndarray | torch.Tensor | nested sequences


def _is_torch(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _as_array(boxes: ArrayLike) -> Any:
    if _is_torch(boxes):
        return boxes.float() if not boxes.is_floating_point() else boxes
    return np.asarray(boxes, dtype=np.float64)


def _clip(x: Any, lo: Any, hi: Any) -> Any:
    if _is_torch(x):
        return torch.clamp(x, min=lo, max=hi)
    return np.clip(x, lo, hi)


def _stack(parts: Sequence[Any]) -> Any:
    if _is_torch(parts[0]):
        return torch.stack(list(parts), dim=-1)
    return np.stack(parts, axis=-1)


def _maximum(a: Any, b: Any) -> Any:
    return torch.maximum(a, b) if _is_torch(a) else np.maximum(a, b)


def _minimum(a: Any, b: Any) -> Any:
    return torch.minimum(a, b) if _is_torch(a) else np.minimum(a, b)


# ---------------------------------------------------------------------------------------------- text


def format_box(box: Sequence[float], decimals: int = DECIMALS) -> str:
    """Write one normalised box as text: ``[x1,y1,x2,y2]`` with ``decimals`` decimals."""
    values = [float(v) for v in (box.tolist() if hasattr(box, "tolist") else box)]
    if len(values) != 4:
        raise ValueError(f"a box has 4 numbers [x1,y1,x2,y2]; got {len(values)}: {values}")
    return "[" + ",".join(f"{v:.{decimals}f}" for v in values) + "]"


def format_boxes(boxes: ArrayLike, decimals: int = DECIMALS) -> str:
    """Write several boxes as a list: ``[[...],[...]]`` (``[]`` for none)."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return "[" + ",".join(format_box(b, decimals) for b in arr) + "]"


def parse_boxes(text: str, max_boxes: int | None = None) -> np.ndarray:
    """Every ``[a,b,c,d]`` in ``text``, in order, as a float array of shape (N, 4).

    Never raises on arbitrary text: no box gives an empty (0, 4) array. Corners are returned as written
    (see :func:`canonical` to order them). ``max_boxes`` keeps only the first boxes.
    """
    if not isinstance(text, str):
        return np.zeros((0, 4))
    found = [[float(g) for g in m.groups()] for m in BOX_PATTERN.finditer(text)]
    if max_boxes is not None:
        found = found[:max_boxes]
    arr = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    return arr[np.isfinite(arr).all(axis=1)]


def parse_box(text: str) -> np.ndarray | None:
    """The first box in ``text`` (shape (4,)), or None when there is none: a missing box is a miss."""
    boxes = parse_boxes(text, max_boxes=1)
    return boxes[0] if len(boxes) else None


# ---------------------------------------------------------------------------------------------- frames


def square_geometry(width: int, height: int) -> tuple[int, int, int]:
    """``(side, offset_x, offset_y)`` of the padded square an image of ``width x height`` is centred in."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive; got {width}x{height}")
    side = max(width, height)
    return side, (side - width) // 2, (side - height) // 2


def pixel_to_square(boxes: ArrayLike, width: int, height: int) -> Any:
    """Pixel ``[x1,y1,x2,y2]`` -> normalised padded-square coordinates (same shape)."""
    b = _as_array(boxes)
    side, ox, oy = square_geometry(width, height)
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return _stack([(x1 + ox) / side, (y1 + oy) / side, (x2 + ox) / side, (y2 + oy) / side])


def square_to_pixel(boxes: ArrayLike, width: int, height: int, clip: bool = True) -> Any:
    """Normalised padded-square coordinates -> pixel ``[x1,y1,x2,y2]``, clipped to the image."""
    b = _as_array(boxes)
    side, ox, oy = square_geometry(width, height)
    xs = [b[..., 0] * side - ox, b[..., 2] * side - ox]
    ys = [b[..., 1] * side - oy, b[..., 3] * side - oy]
    if clip:
        xs = [_clip(x, 0, width) for x in xs]
        ys = [_clip(y, 0, height) for y in ys]
    return _stack([xs[0], ys[0], xs[1], ys[1]])


def xywh_to_xyxy(boxes: ArrayLike) -> Any:
    b = _as_array(boxes)
    return _stack([b[..., 0], b[..., 1], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]])


def xyxy_to_xywh(boxes: ArrayLike) -> Any:
    b = _as_array(boxes)
    return _stack([b[..., 0], b[..., 1], b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]])


def canonical(boxes: ArrayLike) -> Any:
    """Order each box's corners so that x1 <= x2 and y1 <= y2."""
    b = _as_array(boxes)
    return _stack([
        _minimum(b[..., 0], b[..., 2]), _minimum(b[..., 1], b[..., 3]),
        _maximum(b[..., 0], b[..., 2]), _maximum(b[..., 1], b[..., 3]),
    ])


def validate_pixel_box(box: Sequence[float], width: int, height: int, where: str = "box") -> list[float]:
    """Check a pixel box against its image; raise ``ValueError`` naming ``where`` and what is wrong."""
    vals = [float(v) for v in box]
    if len(vals) != 4 or not all(np.isfinite(vals)):
        raise ValueError(f"{where}: expected 4 finite numbers [x1,y1,x2,y2], got {list(box)}")
    x1, y1, x2, y2 = vals
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{where}: box {vals} is inverted or empty (need x1 < x2 and y1 < y2)")
    tol = 1e-6 * max(width, height)
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise ValueError(f"{where}: box {vals} lies outside the {width}x{height} image "
                         f"(need 0 <= x1 < x2 <= {width}, 0 <= y1 < y2 <= {height})")
    return vals


# ---------------------------------------------------------------------------------------------- overlap


def box_area(boxes: ArrayLike) -> Any:
    b = _as_array(boxes)
    return _clip(b[..., 2] - b[..., 0], 0, None) * _clip(b[..., 3] - b[..., 1], 0, None)


def _pairwise(a: Any, b: Any) -> tuple[Any, Any, Any]:
    """Intersection and union of every pair: a (N, 4), b (M, 4) -> (N, M) arrays, plus enclosing boxes."""
    a, b = a[..., :, None, :], b[..., None, :, :]
    lt = _maximum(a[..., :2], b[..., :2])
    rb = _minimum(a[..., 2:], b[..., 2:])
    wh = _clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    lt_c = _minimum(a[..., :2], b[..., :2])
    rb_c = _maximum(a[..., 2:], b[..., 2:])
    wh_c = _clip(rb_c - lt_c, 0, None)
    return inter, union, wh_c[..., 0] * wh_c[..., 1]


def box_iou(a: ArrayLike, b: ArrayLike) -> Any:
    """Pairwise IoU: (N, 4) x (M, 4) -> (N, M). Degenerate pairs (zero union) give 0."""
    a, b = _as_array(a), _as_array(b)
    inter, union, _ = _pairwise(a, b)
    return inter / _clip(union, 1e-12, None)


def generalized_box_iou(a: ArrayLike, b: ArrayLike) -> Any:
    """Pairwise GIoU: IoU - (enclosing - union) / enclosing, in [-1, 1]; (N, 4) x (M, 4) -> (N, M)."""
    a, b = _as_array(a), _as_array(b)
    inter, union, enclosing = _pairwise(a, b)
    iou = inter / _clip(union, 1e-12, None)
    return iou - (enclosing - union) / _clip(enclosing, 1e-12, None)


def box_iou_aligned(a: ArrayLike, b: ArrayLike) -> Any:
    """IoU of corresponding boxes: (..., 4) x (..., 4) -> (...)."""
    a, b = _as_array(a), _as_array(b)
    lt = _maximum(a[..., :2], b[..., :2])
    rb = _minimum(a[..., 2:], b[..., 2:])
    wh = _clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    return inter / _clip(union, 1e-12, None)
