"""Validation of exported training samples against the project's training schema.

The schema (LLaVA style plus object boxes)::

    {"id": str, "image": "path relative to the image root",
     "objects": [[x1,y1,x2,y2], ...],   # pixel boxes, one per <object> token, in order of appearance
     "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}

(``"images": [...]`` instead of ``"image"`` for several images, one ``<image>`` each.) Box text in the
conversations is normalised to the padded square: four numbers in [0, 1] with x1 <= x2 and y1 <= y2.
:func:`validate_samples` raises ``ValueError`` naming the file, the sample's position and id, the field,
and what was expected versus found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from tinygg.boxes import parse_boxes, validate_pixel_box

IMAGE_TOKEN = "<image>"
OBJECT_TOKEN = "<object>"
ROLES = ("human", "gpt")


def _image_size(root: Path, rel: str, where: str, cache: dict[str, tuple[int, int]]) -> tuple[int, int]:
    if rel not in cache:
        path = root / rel
        if not path.is_file():
            raise ValueError(
                f"{where}: field 'image': file {path} does not exist (paths are relative to "
                f"the image root {root})"
            )
        with Image.open(path) as img:  # reads the header only
            cache[rel] = img.size
    return cache[rel]


def validate_sample(sample: Any, where: str, image_root: Path, sizes: dict[str, tuple[int, int]]) -> None:
    if not isinstance(sample, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(sample).__name__}")
    if not isinstance(sample.get("id"), str) or not sample["id"]:
        raise ValueError(f"{where}: field 'id': expected a non-empty string, got {sample.get('id')!r}")
    where = f"{where} (id {sample['id']!r})"
    if ("image" in sample) == ("images" in sample):
        raise ValueError(f"{where}: expected exactly one of 'image' or 'images'")
    images = [sample["image"]] if "image" in sample else sample["images"]
    if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
        raise ValueError(f"{where}: field 'image(s)': expected non-empty path strings, got {images!r}")
    conv = sample.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2 or len(conv) % 2:
        raise ValueError(
            f"{where}: field 'conversations': expected an even, non-zero number of turns, got "
            f"{len(conv) if isinstance(conv, list) else type(conv).__name__}"
        )
    for t, turn in enumerate(conv):
        want = ROLES[t % 2]
        if not isinstance(turn, dict) or turn.get("from") != want or not isinstance(turn.get("value"), str):
            raise ValueError(
                f"{where}: conversations[{t}]: expected {{'from': {want!r}, 'value': str}}, got {turn!r}"
            )
        if not turn["value"].strip():
            raise ValueError(f"{where}: conversations[{t}].value is empty")
        if turn["from"] == "gpt" and (IMAGE_TOKEN in turn["value"] or OBJECT_TOKEN in turn["value"]):
            raise ValueError(
                f"{where}: conversations[{t}] (gpt) contains an {IMAGE_TOKEN}/{OBJECT_TOKEN} token"
            )
        for b, box in enumerate(parse_boxes(turn["value"])):
            x1, y1, x2, y2 = box.tolist()
            if not (0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1):
                raise ValueError(
                    f"{where}: conversations[{t}], box text {b}: expected 0 <= x1 <= x2 <= 1 and "
                    f"0 <= y1 <= y2 <= 1 (padded-square frame), got {box.tolist()}"
                )
    text = "".join(turn["value"] for turn in conv)
    if text.count(IMAGE_TOKEN) != len(images):
        raise ValueError(
            f"{where}: field 'conversations': expected {len(images)} {IMAGE_TOKEN} token(s) "
            f"(one per image), found {text.count(IMAGE_TOKEN)}"
        )
    objects = sample.get("objects") or []
    if not isinstance(objects, list):
        raise ValueError(f"{where}: field 'objects': expected a list of [x1,y1,x2,y2], got {objects!r}")
    if text.count(OBJECT_TOKEN) != len(objects):
        raise ValueError(
            f"{where}: field 'objects': expected one box per {OBJECT_TOKEN} token "
            f"({text.count(OBJECT_TOKEN)} tokens), got {len(objects)} boxes"
        )
    if objects:
        if len(images) != 1:
            raise ValueError(f"{where}: field 'objects': object boxes need a single image, got {len(images)}")
        W, H = _image_size(image_root, images[0], where, sizes)
        for k, box in enumerate(objects):
            if not isinstance(box, list) or len(box) != 4:
                raise ValueError(f"{where}: objects[{k}]: expected [x1,y1,x2,y2], got {box!r}")
            validate_pixel_box(box, W, H, where=f"{where}: objects[{k}]")
    else:
        for rel in images:
            _image_size(image_root, rel, where, sizes)


def validate_samples(samples: Any, image_root: str | Path, source: str = "samples") -> int:
    """Check a list of training samples; return how many. Raises ``ValueError`` on the first problem."""
    if not isinstance(samples, list):
        raise ValueError(f"{source}: expected a JSON list of samples, got {type(samples).__name__}")
    root = Path(image_root)
    seen: set[str] = set()
    sizes: dict[str, tuple[int, int]] = {}
    for i, sample in enumerate(samples):
        where = f"{source}, sample {i}"
        validate_sample(sample, where, root, sizes)
        if sample["id"] in seen:
            raise ValueError(f"{where}: field 'id': {sample['id']!r} occurs twice (ids must be unique)")
        seen.add(sample["id"])
    return len(samples)
