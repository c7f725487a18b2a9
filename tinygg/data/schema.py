"""The training sample schema and its validation.

One sample (JSON list or JSONL, LLaVA style plus ``objects``)::

    {"id": "refcoco-123",
     "image": "train2014/COCO_train2014_000000000009.jpg",      # or "images": [...] for several (DiG pairs)
     "objects": [[x1, y1, x2, y2], ...],                         # pixel boxes in the first image, one per <object>
     "conversations": [{"from": "human", "value": "<image>\\nOutput the coordinate of the cat."},
                       {"from": "gpt", "value": "[0.120,0.340,0.560,0.780]"}]}

Image paths are relative to an image root. Box text in the conversation is normalised to the padded
square (``tinygg.boxes``). Errors name the file, the row and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tokenizer import IMAGE_TOKEN, OBJECT_TOKEN


class SampleError(ValueError):
    """A bad training sample: ``str(err)`` names the file, row and field."""

    def __init__(self, file: str | Path, row: int, field_name: str, problem: str) -> None:
        self.file, self.row, self.field, self.problem = str(file), row, field_name, problem
        super().__init__(f"{file}, row {row}, field '{field_name}': {problem}")

    def reject(self, record: Any = None) -> dict[str, Any]:
        """The rejects-file line of this error (with the offending record when there is one)."""
        out = {"file": self.file, "row": self.row, "field": self.field, "problem": self.problem}
        if record is not None:
            out["record"] = record
        return out


@dataclass
class Sample:
    id: str
    images: list[str]
    conversations: list[dict[str, str]]
    objects: list[list[float]] = field(default_factory=list)
    file: str = ""  # where the sample came from, for errors raised later (e.g. when its image is opened)
    row: int = -1

    @property
    def source(self) -> str:
        return f"{self.file}, row {self.row}"

    def error(self, field_name: str, problem: str) -> SampleError:
        return SampleError(self.file, self.row, field_name, problem)

    def text(self) -> str:
        return "\n".join(t["value"] for t in self.conversations)


_ROLES = {"human", "gpt", "user", "assistant", "system"}


def validate_sample(raw: Any, file: str | Path, row: int) -> Sample:
    """A :class:`Sample` from one raw record, or :class:`SampleError` naming what is wrong."""
    if not isinstance(raw, dict):
        raise SampleError(file, row, "<record>", f"expected a JSON object, got {type(raw).__name__}")
    sid = raw.get("id", f"{Path(file).stem}-{row}")
    images = raw.get("images", None)
    if images is None:
        images = [raw["image"]] if raw.get("image") else []
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise SampleError(file, row, "images" if "images" in raw else "image",
                          f"expected a path string (or a list of them), got {images!r}")
    convs = raw.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise SampleError(file, row, "conversations", "expected a non-empty list of {from, value} turns")
    n_img = n_obj = 0
    has_answer = False
    for i, t in enumerate(convs):
        if not isinstance(t, dict) or t.get("from") not in _ROLES:
            got = t.get("from") if isinstance(t, dict) else t
            raise SampleError(file, row, f"conversations[{i}].from", f"expected one of human/gpt/system, got {got!r}")
        if not isinstance(t.get("value"), str):
            raise SampleError(file, row, f"conversations[{i}].value", f"expected text, got {t.get('value')!r}")
        n_img += t["value"].count(IMAGE_TOKEN)
        n_obj += t["value"].count(OBJECT_TOKEN)
        has_answer |= t["from"] in ("gpt", "assistant")
    if not has_answer:
        raise SampleError(file, row, "conversations", "no 'gpt' turn: nothing to learn from")
    if n_img != len(images):
        raise SampleError(file, row, "conversations", f"{n_img} {IMAGE_TOKEN} placeholder(s) but {len(images)} "
                          "image path(s)")
    objects = raw.get("objects") or []
    if not isinstance(objects, list):
        raise SampleError(file, row, "objects", f"expected a list of [x1,y1,x2,y2] pixel boxes, got {objects!r}")
    for k, box in enumerate(objects):
        ok = isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
        if not ok:
            raise SampleError(file, row, f"objects[{k}]", f"expected [x1,y1,x2,y2] in pixels, got {box!r}")
        if not (box[0] < box[2] and box[1] < box[3]) or min(box) < 0:
            raise SampleError(file, row, f"objects[{k}]", f"box {list(box)} is inverted, empty or negative")
    if n_obj != len(objects):
        raise SampleError(file, row, "objects", f"{n_obj} {OBJECT_TOKEN} placeholder(s) but {len(objects)} box(es)")
    if n_obj and not images:
        raise SampleError(file, row, "objects", f"{OBJECT_TOKEN} needs an image to crop from")
    return Sample(id=str(sid), images=list(images), conversations=[{"from": t["from"], "value": t["value"]}
                                                                   for t in convs],
                  objects=[[float(v) for v in b] for b in objects], file=str(file), row=row)


def iter_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(row, record)`` of a JSON list (rows counted from 0) or a JSONL file (rows = line numbers from 1)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    with path.open(encoding="utf-8") as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        f.seek(0)
        if head == "[":
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise SampleError(path, e.lineno, "<json>", f"invalid JSON: {e.msg} (line {e.lineno}, col {e.colno})")
            yield from enumerate(data)
            return
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise SampleError(path, lineno, "<json>", f"invalid JSON: {e.msg} (col {e.colno})") from None


def read_samples(path: str | Path, skip_invalid: bool = False,
                 rejects: list[dict] | None = None) -> list[Sample]:
    """Every valid sample of a file. Invalid ones raise, or with ``skip_invalid`` go to ``rejects``."""
    out: list[Sample] = []
    for row, raw in iter_records(path):
        try:
            out.append(validate_sample(raw, path, row))
        except SampleError as e:
            if not skip_invalid:
                raise
            if rejects is not None:
                rejects.append(e.reject(raw))
    return out


def write_samples(samples: list[dict], path: str | Path) -> Path:
    """Write samples as JSONL (``.jsonl``) or a JSON list (anything else)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            for s in samples:
                f.write(json.dumps(s, ensure_ascii=False) + "\n")
        else:
            json.dump(samples, f, ensure_ascii=False, indent=0)
    return path
