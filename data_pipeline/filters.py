"""The paper's sample filters (section 3.2, "Filter"), as one pure function over a sample.

A sample is dropped, for the first reason that applies, when

* ``object_too_small`` / ``object_too_large``: one of its object images (``<object>`` crops) covers less
  than ``min_object_area`` or more than ``max_object_area`` of the image, or has a side shorter than
  ``min_object_side`` pixels (a low-resolution crop is noise; a near-full-image crop says nothing);
* ``overlapping_object_images``: two of its object images (e.g. the options of a ``text_to_image``
  question) overlap with IoU above ``max_option_iou`` (the answer would be ambiguous);
* ``low_confidence``: an object it uses was grounded with a score below ``min_score``;
* ``ambiguous_name``: an object it uses shares its name with more than ``max_instances`` boxes;
* ``too_many_boxes``: it holds more than ``max_boxes`` boxes (object images plus box texts);
* ``box_outside_image``: one of its object boxes is empty or not inside the image.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinygg.boxes import BOX_PATTERN, box_area, box_iou, validate_pixel_box


@dataclass(frozen=True)
class FilterSettings:
    min_object_area: float = 0.002
    max_object_area: float = 0.8
    min_object_side: float = 8.0
    max_option_iou: float = 0.5
    min_score: float = 0.35
    max_instances: int = 5
    max_boxes: int = 12

    def __post_init__(self) -> None:
        if not 0 <= self.min_object_area < self.max_object_area <= 1:
            raise ValueError(
                "need 0 <= --min-object-area < --max-object-area <= 1; got "
                f"{self.min_object_area} and {self.max_object_area}"
            )
        if not 0 <= self.max_option_iou <= 1:
            raise ValueError(f"--max-option-iou must lie in [0, 1]; got {self.max_option_iou}")
        if self.max_instances < 1 or self.max_boxes < 1:
            raise ValueError(
                f"--max-instances and --max-boxes must be >= 1; got {self.max_instances}, {self.max_boxes}"
            )


def drop_reason(sample: dict[str, Any], record: dict[str, Any], settings: FilterSettings) -> str | None:
    """Why ``sample`` (of image ``record``) must be dropped, or None to keep it."""
    W, H = record["width"], record["height"]
    boxes = np.asarray(sample.get("objects") or [], dtype=np.float64).reshape(-1, 4)  # (N, 4) pixels
    for k, box in enumerate(boxes):
        try:
            validate_pixel_box(box, W, H, where=f"object {k}")
        except ValueError:
            return "box_outside_image"
    if len(boxes):
        area = box_area(boxes) / float(W * H)  # (N,)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])  # (N,)
        if (area < settings.min_object_area).any() or (sides < settings.min_object_side).any():
            return "object_too_small"
        if (area > settings.max_object_area).any():
            return "object_too_large"
        if len(boxes) > 1:
            iou = box_iou(boxes, boxes)  # (N, N)
            np.fill_diagonal(iou, 0.0)
            if (iou > settings.max_option_iou).any():
                return "overlapping_object_images"
    by_id = {o["id"]: o for o in record["objects"]}
    name_counts = Counter(o["name"] for o in record["objects"])
    used = [by_id[r] for r in dict.fromkeys(sample.get("refs") or []) if r in by_id]
    if any(o["score"] < settings.min_score for o in used):
        return "low_confidence"
    if any(name_counts[o["name"]] > settings.max_instances for o in used):
        return "ambiguous_name"
    n_text_boxes = sum(len(BOX_PATTERN.findall(turn["value"])) for turn in sample["conversations"])
    if len(boxes) + n_text_boxes > settings.max_boxes:
        return "too_many_boxes"
    return None
