"""Converters from grounding data people have into training samples (REC: expression -> box).

* ``refer``: the refer API files: ``refs(unc).p`` (pickle: ref_id, ann_id, image_id, split, sentences) and
  COCO ``instances.json`` (annotation bbox ``[x, y, w, h]``, image file_name / width / height).
* ``jsonl``: one object per line ``{"image": PATH, "expression": TEXT, "bbox": [...]}`` with pixel boxes in
  ``xyxy`` (default) or ``xywh``; ``img_path`` is accepted for ``image`` (Shikra style).

Prompts are drawn (seeded) from :data:`REC_TEMPLATES`; answers are box text in the padded-square frame.
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from ..boxes import format_box, pixel_to_square, validate_pixel_box, xywh_to_xyxy
from .schema import SampleError, iter_records

REC_TEMPLATES = [
    "Output the coordinate of {exp}",
    "Output the coordinate of {exp}.",
    "Where is {exp}? Answer with its coordinates.",
    "Locate {exp} in the image.",
    "Give the bounding box of {exp}.",
    "Find {exp} and output its coordinates.",
    "Please point out {exp} with a box.",
]
REG_TEMPLATES = [
    "What is in the region {box}?",
    "Describe the object at {box} briefly.",
    "Give a short description of the region {box}.",
]


def rec_sample(sid: str, image: str, expression: str, box_px: list[float], width: int, height: int,
               rng: random.Random, templates: list[str] = REC_TEMPLATES) -> dict[str, Any]:
    box = format_box(pixel_to_square(box_px, width, height))
    prompt = rng.choice(templates).format(exp=expression.strip())
    return {"id": sid, "image": image, "conversations": [
        {"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": box}]}


def reg_sample(sid: str, image: str, expression: str, box_px: list[float], width: int, height: int,
               rng: random.Random) -> dict[str, Any]:
    box = format_box(pixel_to_square(box_px, width, height))
    return {"id": sid, "image": image, "conversations": [
        {"from": "human", "value": "<image>\n" + rng.choice(REG_TEMPLATES).format(box=box)},
        {"from": "gpt", "value": expression.strip()}]}


def _image_size(root: Path, rel: str, file: str, row: int) -> tuple[int, int]:
    path = root / rel
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise SampleError(file, row, "image", f"image file not found: {path}") from None
    except OSError as e:
        raise SampleError(file, row, "image", f"{path} is not a readable image: {e}") from None


def convert_jsonl(path: str | Path, image_root: str | Path | None = None, box_format: str = "xyxy",
                  seed: int = 0, with_reg: bool = False, rejects: list[dict] | None = None) -> list[dict]:
    """REC samples from a simple JSONL of image / expression / pixel box.

    With ``rejects`` given, bad rows are appended there (file, row, field, problem) instead of raising.
    """
    if box_format not in ("xyxy", "xywh"):
        raise ValueError(f"box_format must be xyxy or xywh; got {box_format!r}")
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    rng = random.Random(seed)
    out: list[dict] = []
    for row, rec in iter_records(path):
        try:
            out += _convert_row(rec, path, row, root, box_format, rng, with_reg)
        except SampleError as e:
            if rejects is None:
                raise
            rejects.append(e.reject(rec))
    return out


def _convert_row(rec: Any, path: Path, row: int, root: Path, box_format: str, rng: random.Random,
                 with_reg: bool) -> list[dict]:
    if not isinstance(rec, dict):
        raise SampleError(path, row, "<record>", f"expected a JSON object, got {type(rec).__name__}")
    image = rec.get("image", rec.get("img_path"))
    if not isinstance(image, str) or not image:
        raise SampleError(path, row, "image", f"expected an image path, got {image!r}")
    exp = rec.get("expression", rec.get("sentence"))
    if not isinstance(exp, str) or not exp.strip():
        raise SampleError(path, row, "expression", f"expected a non-empty text, got {exp!r}")
    bbox = rec.get("bbox", rec.get("box"))
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise SampleError(path, row, "bbox", f"expected 4 numbers ({box_format}, pixels), got {bbox!r}")
    try:
        box = [float(v) for v in bbox]
    except (TypeError, ValueError):
        raise SampleError(path, row, "bbox", f"expected numbers, got {bbox!r}") from None
    if box_format == "xywh":
        box = xywh_to_xyxy(box).tolist()
    w, h = _image_size(root, image, str(path), row)
    try:
        box = validate_pixel_box(box, w, h, where="bbox")
    except ValueError as e:
        raise SampleError(path, row, "bbox", str(e).removeprefix("bbox: ")) from None
    sid = str(rec.get("id", f"{path.stem}-{row}"))
    out = [rec_sample(sid, image, exp, box, w, h, rng)]
    if with_reg:
        out.append(reg_sample(sid + "-reg", image, exp, box, w, h, rng))
    return out


def convert_refer(refs_path: str | Path, instances_path: str | Path, splits: Iterable[str] = ("train",),
                  seed: int = 0, with_reg: bool = False, image_prefix: str = "",
                  rejects: list[dict] | None = None) -> list[dict]:
    """REC samples from the refer API files, one per sentence of each ref in ``splits``."""
    refs_path, instances_path = Path(refs_path), Path(instances_path)
    with refs_path.open("rb") as f:
        refs = pickle.load(f)
    inst = json.loads(instances_path.read_text())
    anns = {a["id"]: a for a in inst.get("annotations", [])}
    images = {im["id"]: im for im in inst.get("images", [])}
    wanted = set(splits)
    rng = random.Random(seed)
    out: list[dict] = []
    for row, ref in enumerate(refs):
        if ref.get("split") not in wanted:
            continue
        try:
            ann = anns.get(ref.get("ann_id"))
            if ann is None:
                raise SampleError(refs_path, row, "ann_id", f"annotation {ref.get('ann_id')!r} is not in "
                                  f"{instances_path.name}")
            im = images.get(ref.get("image_id"))
            if im is None:
                raise SampleError(refs_path, row, "image_id", f"image {ref.get('image_id')!r} is not in "
                                  f"{instances_path.name}")
            box = xywh_to_xyxy(ann["bbox"]).tolist()
            try:
                box = validate_pixel_box(box, im["width"], im["height"], where="bbox")
            except ValueError as e:
                raise SampleError(instances_path, ann["id"], "bbox", str(e)) from None
            for k, sent in enumerate(ref.get("sentences", [])):
                text = sent.get("sent") if isinstance(sent, dict) else sent
                if not text:
                    continue
                sid = f"refer-{ref.get('ref_id')}-{k}"
                image = image_prefix + im["file_name"]
                out.append(rec_sample(sid, image, text, box, im["width"], im["height"], rng))
                if with_reg:
                    out.append(reg_sample(sid + "-reg", image, text, box, im["width"], im["height"], rng))
        except SampleError as e:
            if rejects is None:
                raise
            rejects.append(e.reject())
    return out
