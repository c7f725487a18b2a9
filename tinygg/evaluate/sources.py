"""Readers for the evaluation data a user really has, each in its own on-disk format.

REC (referring expression comprehension) samples come from

* ``refer:ROOT[:DATASETS]`` -- the refer API files: ``ROOT/<dataset>/refs(unc).p`` (``refs(umd).p`` for
  RefCOCOg), a pickled list of refs ``{ref_id, ann_id, image_id, split, sentences: [{sent}], ...}``, plus
  ``ROOT/<dataset>/instances.json`` (COCO ``annotations`` with ``bbox`` [x, y, w, h] and ``images`` with
  ``file_name``, ``width``, ``height``), with the COCO train2014 images found under ``ROOT`` (or given by
  ``--image-root``). ``DATASETS`` is a comma list of refcoco, refcoco+, refcocog (default: all present).
  ``ROOT`` may also be one dataset's own directory.
* ``parquet:GLOB[:DATASET]`` -- the lmms-lab/RefCOCO, RefCOCOplus, RefCOCOg parquet files (columns
  ``question_id``, ``image`` {bytes}, ``answer`` (list of sentences), ``bbox`` [x, y, w, h] in pixels,
  ``file_name``). The split comes from each file name (``val-00000-of-00004.parquet``) or its folder
  (``default/val/0000.parquet``), the dataset from the path (``RefCOCOplus`` -> refcoco+) or ``DATASET``.
  Each sentence of ``answer`` is one sample (as lmms-eval explodes them). These files' row counts differ
  from the refer API's standard splits (lmms-eval issue #1066), so their numbers are not directly
  comparable with papers that used the refer files.
* ``jsonl:PATH[:NAME]`` -- Shikra-style JSONL, one ``{"img_path", "expression", "bbox": [x1,y1,x2,y2]}``
  per line (pixels; optional ``id``, ``width``, ``height``), image paths relative to the file's folder or
  to ``--image-root``. This is also what ``tinygg data synth`` writes as ``test_rec.jsonl``. The split
  name is ``NAME``, else read from Shikra file names (``REC_refcoco+_unc_testA.jsonl`` -> refcoco+_testA),
  else the file's stem.

Without a ``kind:`` prefix the kind is guessed from the path. Split names are ``<dataset>_<split>``
(``refcoco_val``, ``refcoco+_testA``, ``refcocog_test``), the keys of the paper's Table 1.

POPE questions are JSONL lines ``{"question_id", "image", "text", "label": "yes"|"no"}`` in files named
``coco_pope_random.json`` / ``_popular`` / ``_adversarial``.

Readers never stop at a bad row: they return the good samples and a list of :class:`BadRow` naming the
file, the row and the field.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import math
import os
import pickle
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..boxes import validate_pixel_box, xywh_to_xyxy
from ..processor import load_image

logger = logging.getLogger(__name__)

DATASETS = ("refcoco", "refcoco+", "refcocog")
REFS_FILES = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}
EVAL_SPLITS = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB"),
               "refcocog": ("val", "test")}
KINDS = ("refer", "parquet", "jsonl")
OVERSHOOT = 0.01  # GT boxes this far (share of the image side) outside the image are clipped, not dropped
_SPLIT_WORDS = {"val": "val", "validation": "val", "testa": "testA", "testb": "testB", "test": "test",
                "train": "train"}
_SPLIT_RE = re.compile(r"(?:^|[_\-./\\])(val|validation|testa|testb|test|train)(?=$|[_\-./\\])",
                       re.IGNORECASE)
_DATASET_RE = re.compile(r"refcoco(g|\+|plus|_plus|-plus)?(?![a-z])", re.IGNORECASE)


@dataclass(frozen=True)
class BadRow:
    """A row a reader skipped: where it is and what is wrong with it."""

    file: str
    row: int | str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}, row {self.row}, field {self.field!r}: {self.problem}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "row": self.row, "field": self.field, "problem": self.problem}


@dataclass(frozen=True)
class RecSample:
    """One referring expression with its ground-truth box (pixels ``[x1,y1,x2,y2]`` of the original image)."""

    id: str
    split: str
    expression: str
    bbox: tuple[float, float, float, float]
    width: int
    height: int
    image_path: str | None = None  # a file, or None when the bytes are inline
    image_bytes: bytes | None = None
    source_file: str = ""  # where the sample was read, for error messages
    source_row: int | str = "-"

    @property
    def key(self) -> tuple[str, str]:
        return (self.split, self.id)

    @property
    def where(self) -> str:
        return f"{self.source_file}, row {self.source_row}"

    @property
    def image_name(self) -> str:
        return self.image_path or self.where

    def load_image(self) -> Image.Image:
        if self.image_bytes is not None:
            try:
                with Image.open(io.BytesIO(self.image_bytes)) as im:
                    return im.convert("RGB")
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"{self.where}: the image bytes are not a readable image: {e}") from None
        return load_image(self.image_path)


@dataclass(frozen=True)
class PopeQuestion:
    """One POPE yes/no question about an image."""

    id: str
    subset: str
    image: str
    text: str
    label: str  # "yes" | "no"
    source_file: str = ""
    source_row: int | str = "-"

    @property
    def key(self) -> tuple[str, str]:
        return (self.subset, self.id)

    @property
    def where(self) -> str:
        return f"{self.source_file}, row {self.source_row}"


# ---------------------------------------------------------------------------------------------- names


def dataset_name(text: str) -> str | None:
    """The RefCOCO family member a path or name refers to (``RefCOCOplus`` -> ``refcoco+``), or None."""
    found = None
    for m in _DATASET_RE.finditer(text):
        suffix = (m.group(1) or "").lower()
        found = "refcocog" if suffix == "g" else "refcoco+" if suffix else "refcoco"
    return found  # the last mention wins: /data/refcoco_all/RefCOCOg/val.parquet -> refcocog


def split_word(text: str) -> str | None:
    """The split a file name mentions (``testa`` -> ``testA``), or None. The last mention wins."""
    found = None
    for m in _SPLIT_RE.finditer(text):
        found = _SPLIT_WORDS[m.group(1).lower()]
    return found


def split_name(dataset: str | None, split: str) -> str:
    """Canonical split key: ``refcoco+_testA``; just ``split`` when the dataset is unknown."""
    return f"{dataset}_{split}" if dataset else split


def select_splits(names: Iterable[str], wanted: Iterable[str] | None) -> set[str]:
    """The split names matching ``wanted`` (full names like ``refcoco_val`` or bare ones like ``val``)."""
    names = set(names)
    if not wanted:
        return names
    chosen = set()
    for w in wanted:
        hits = {n for n in names if n == w or n.endswith("_" + w) or n.lower() == w.lower()}
        chosen |= hits
    return chosen


# ---------------------------------------------------------------------------------------------- helpers


def _image_size(path: str, file: str, row: int | str, field: str, problems: list[BadRow]
                ) -> tuple[int, int] | None:
    """``(width, height)`` from an image file's header; a missing/unreadable file is a bad row."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        problems.append(BadRow(file, row, field, f"image file not found: {path}"))
    except (UnidentifiedImageError, OSError) as e:
        problems.append(BadRow(file, row, field, f"not a readable image: {path} ({e})"))
    return None


def _checked_box(box: Any, width: int, height: int, file: str, row: int | str, field: str,
                 problems: list[BadRow], xywh: bool) -> tuple[float, float, float, float] | None:
    """The GT box as pixel xyxy, validated against the image; a bad box is recorded and None returned.

    A box that overshoots the image by at most ``OVERSHOOT`` (annotation rounding, as in a few COCO boxes)
    is clipped rather than dropped, so the split keeps its standard size.
    """
    try:
        vals = [float(v) for v in box]
        if len(vals) != 4:
            raise ValueError(f"expected 4 numbers, got {len(vals)}")
        if xywh:
            vals = [float(v) for v in xywh_to_xyxy(vals)]
        if all(math.isfinite(v) for v in vals):
            tol = OVERSHOOT * max(width, height)
            if -tol <= min(vals[0], vals[1]) and vals[2] <= width + tol and vals[3] <= height + tol:
                vals = [max(0.0, vals[0]), max(0.0, vals[1]), min(float(width), vals[2]),
                        min(float(height), vals[3])]
        vals = validate_pixel_box(vals, width, height, where="the GT box")
    except (TypeError, ValueError) as e:
        form = "[x, y, w, h]" if xywh else "[x1, y1, x2, y2]"
        problems.append(BadRow(file, row, field, f"expected a pixel box {form} inside the {width}x{height} "
                                                 f"image; got {box!r}: {e}"))
        return None
    return (vals[0], vals[1], vals[2], vals[3])


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and scalars: a refs file never needs to import anything."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the refs file asks to load {module}.{name}; a refer refs file holds "
                                     "only lists, dicts, strings and numbers, so this file is refused")


def _load_refs(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        try:
            refs = _PlainUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise ValueError(f"{path}: not a refer refs pickle (a list of ref dicts): {e}") from None
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a pickled list of refs; got {type(refs).__name__}")
    return refs


# ---------------------------------------------------------------------------------------------- refer


def _find_coco_images(root: Path) -> Path | None:
    for cand in ("images/mscoco/images/train2014", "images/mscoco/train2014", "images/train2014", "train2014",
                 "../images/mscoco/images/train2014", "../images/train2014", "../train2014", "images"):
        if (root / cand).is_dir():
            return root / cand
    return None


def read_refer(root: str | os.PathLike, datasets: Iterable[str] | None = None,
               image_root: str | os.PathLike | None = None) -> tuple[list[RecSample], list[BadRow]]:
    """All sentences of the eval splits of RefCOCO / RefCOCO+ / RefCOCOg from refer API files.

    ``root`` holds ``refcoco/``, ``refcoco+/``, ``refcocog/`` (each with the refs pickle and
    ``instances.json``) or is one of them. The train split is skipped (it is not an eval split).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"refer root {root} is not a directory")
    own = dataset_name(root.name)
    if own and any((root / f).exists() for f in set(REFS_FILES.values())):
        dirs = {own: root}
    else:
        dirs = {d: root / d for d in DATASETS if (root / d).is_dir()}
    if datasets:
        wanted = [dataset_name(d) or d for d in datasets]
        missing = [d for d in wanted if d not in dirs]
        if missing:
            raise FileNotFoundError(f"refer root {root}: no folder for {missing} (found {sorted(dirs)}; "
                                    f"expected {root}/<dataset>/{{{REFS_FILES['refcoco']},instances.json}})")
        dirs = {d: dirs[d] for d in wanted}
    if not dirs:
        raise FileNotFoundError(f"refer root {root}: none of {list(DATASETS)} found (expected e.g. "
                                f"{root}/refcoco/refs(unc).p and {root}/refcoco/instances.json)")
    samples: list[RecSample] = []
    problems: list[BadRow] = []
    for dataset, folder in dirs.items():
        images_dir = (Path(image_root) if image_root
                      else _find_coco_images(folder) or _find_coco_images(root))
        if images_dir is None:
            raise FileNotFoundError(f"no COCO train2014 image folder found near {folder}; give it with "
                                    "--image-root")
        s, p = _read_refer_dataset(dataset, folder, images_dir)
        samples += s
        problems += p
    return samples, problems


def _read_refer_dataset(dataset: str, folder: Path, images_dir: Path) -> tuple[list[RecSample], list[BadRow]]:
    refs_path, inst_path = folder / REFS_FILES[dataset], folder / "instances.json"
    for p in (refs_path, inst_path):
        if not p.exists():
            raise FileNotFoundError(f"{dataset}: {p} is missing (a refer API folder holds "
                                    f"{REFS_FILES[dataset]} and instances.json)")
    refs = _load_refs(refs_path)
    try:
        inst = json.loads(inst_path.read_text())
        anns = {a["id"]: a for a in inst["annotations"]}
        images = {im["id"]: im for im in inst["images"]}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{inst_path}: not a COCO instances file with 'annotations' (id, bbox) and 'images' "
                         f"(id, file_name, width, height): {e}") from None
    samples: list[RecSample] = []
    problems: list[BadRow] = []
    file = str(refs_path)
    for row, ref in enumerate(refs):
        if not isinstance(ref, dict):
            problems.append(BadRow(file, row, "ref", f"expected a dict; got {type(ref).__name__}"))
            continue
        split = ref.get("split")
        if split not in EVAL_SPLITS[dataset]:
            if split not in ("train",):
                problems.append(BadRow(file, row, "split",
                                       f"expected one of {EVAL_SPLITS[dataset]} or train; got {split!r}"))
            continue
        ann = anns.get(ref.get("ann_id"))
        if ann is None:
            problems.append(BadRow(file, row, "ann_id", f"{ref.get('ann_id')!r} is not an annotation id of "
                                                         f"{inst_path}"))
            continue
        image = images.get(ref.get("image_id", ann.get("image_id")))
        if image is None:
            problems.append(BadRow(file, row, "image_id", f"{ref.get('image_id')!r} is not an image id of "
                                                           f"{inst_path}"))
            continue
        try:
            width, height = int(image["width"]), int(image["height"])
            image_path = str(images_dir / image["file_name"])
        except (KeyError, TypeError, ValueError) as e:
            problems.append(BadRow(str(inst_path), f"image id {image.get('id')}", "width/height/file_name",
                                   f"missing or not a number: {e}"))
            continue
        if not os.path.exists(image_path):
            problems.append(BadRow(file, row, "image_id", f"image file not found: {image_path}"))
            continue
        box = _checked_box(ann.get("bbox"), width, height, str(inst_path), f"annotation id {ann.get('id')}",
                           "bbox", problems, xywh=True)
        if box is None:
            continue
        sentences = ref.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            problems.append(BadRow(file, row, "sentences",
                                   f"expected a non-empty list of {{'sent': ...}}; got {sentences!r}"))
            continue
        for k, sent in enumerate(sentences):
            text = sent.get("sent") if isinstance(sent, dict) else None
            if not isinstance(text, str) or not text.strip():
                problems.append(BadRow(file, row, f"sentences[{k}].sent", f"expected text; got {text!r}"))
                continue
            samples.append(RecSample(id=f"{ref.get('ref_id', row)}_{k}", split=split_name(dataset, split),
                                     expression=text.strip(), bbox=box, width=width, height=height,
                                     image_path=image_path, source_file=file, source_row=row))
    return samples, problems


# ---------------------------------------------------------------------------------------------- parquet


def _parquet_files(pattern: str) -> list[str]:
    p = Path(pattern)
    if p.is_dir():
        files = sorted(glob.glob(str(p / "**" / "*.parquet"), recursive=True))
    else:
        files = sorted(glob.glob(pattern, recursive=True))
    if not files:
        raise FileNotFoundError(f"no parquet files match {pattern!r}")
    return files


def read_parquet(pattern: str, dataset: str | None = None) -> tuple[list[RecSample], list[BadRow]]:
    """Samples from lmms-lab RefCOCO-style parquet files (one sample per sentence of ``answer``).

    Read with pyarrow batch by batch: ``datasets.load_dataset("parquet")`` would first copy the
    multi-GB files (images inline) into its cache.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    samples: list[RecSample] = []
    problems: list[BadRow] = []
    for file in _parquet_files(pattern):
        ds = dataset_name(dataset) if dataset else dataset_name(file)
        split = split_word(Path(file).name) or split_word(Path(file).parent.name)
        if split is None:
            raise ValueError(f"{file}: cannot tell the split from the file name (expected e.g. "
                             "val-00000-of-00004.parquet or a folder named val/testA/testB/test)")
        try:
            pf = pq.ParquetFile(file)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise ValueError(f"{file}: not a parquet file: {e}") from None
        need = {"question_id", "image", "answer", "bbox"}
        missing = need - set(pf.schema_arrow.names)
        if missing:
            raise ValueError(f"{file}: missing column(s) {sorted(missing)} (expected the lmms-lab RefCOCO "
                             f"columns question_id, image, answer, bbox; found {pf.schema_arrow.names})")
        cols = [c for c in ("question_id", "image", "answer", "bbox", "file_name")
                if c in pf.schema_arrow.names]
        row = -1
        for batch in pf.iter_batches(batch_size=64, columns=cols):
            for rec in batch.to_pylist():
                row += 1
                samples += _parquet_row(rec, file, row, split_name(ds, split), problems)
    return samples, problems


def _parquet_row(rec: dict, file: str, row: int, split: str, problems: list[BadRow]) -> list[RecSample]:
    image = rec.get("image")
    data = image.get("bytes") if isinstance(image, dict) else image if isinstance(image, bytes) else None
    if not data:
        problems.append(BadRow(file, row, "image", "no image bytes"))
        return []
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError) as e:
        problems.append(BadRow(file, row, "image", f"the bytes are not a readable image: {e}"))
        return []
    box = _checked_box(rec.get("bbox"), width, height, file, row, "bbox", problems, xywh=True)
    if box is None:
        return []
    answers = rec.get("answer")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers:
        problems.append(BadRow(file, row, "answer", f"expected a list of sentences; got {answers!r}"))
        return []
    qid = rec.get("question_id", row)
    out = []
    for k, text in enumerate(answers):
        if not isinstance(text, str) or not text.strip():
            problems.append(BadRow(file, row, f"answer[{k}]", f"expected text; got {text!r}"))
            continue
        out.append(RecSample(id=f"{qid}_{k}", split=split, expression=text.strip(), bbox=box, width=width,
                             height=height, image_bytes=data, source_file=file, source_row=row))
    return out


# ---------------------------------------------------------------------------------------------- jsonl


def iter_jsonl(path: str | os.PathLike, problems: list[BadRow]) -> Iterator[tuple[int, dict]]:
    """``(line_number, record)`` of each JSON object line (1-based); bad lines become :class:`BadRow`."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(BadRow(str(path), n, "(line)",
                                       f"not valid JSON: {e.msg} at column {e.colno}"))
                continue
            if not isinstance(rec, dict):
                problems.append(BadRow(str(path), n, "(line)",
                                       f"expected a JSON object; got {type(rec).__name__}"))
                continue
            yield n, rec


def jsonl_split_name(path: str | os.PathLike) -> str:
    """``REC_refcoco+_unc_testA.jsonl`` -> ``refcoco+_testA``; other files -> their stem."""
    stem = Path(path).name.split(".")[0]
    ds, split = dataset_name(stem), split_word(stem)
    return split_name(ds, split) if ds and split else stem


def read_jsonl(path: str | os.PathLike, name: str | None = None,
               image_root: str | os.PathLike | None = None) -> tuple[list[RecSample], list[BadRow]]:
    """Samples from a Shikra-style JSONL file (``img_path``, ``expression``, ``bbox`` xyxy pixels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"REC JSONL file not found: {path}")
    split = name or jsonl_split_name(path)
    root = Path(image_root) if image_root else path.parent
    samples: list[RecSample] = []
    problems: list[BadRow] = []
    file = str(path)
    for n, rec in iter_jsonl(path, problems):
        missing = [k for k in ("img_path", "expression", "bbox") if k not in rec]
        if missing:
            problems.append(BadRow(file, n, missing[0], "missing (a REC line is {\"img_path\", "
                                                         "\"expression\", \"bbox\": [x1,y1,x2,y2]})"))
            continue
        expression = rec["expression"]
        if not isinstance(expression, str) or not expression.strip():
            problems.append(BadRow(file, n, "expression", f"expected text; got {expression!r}"))
            continue
        image_path = str(rec["img_path"])
        if not image_path.startswith("sample:"):  # sample:NAME is a scikit-image photograph
            image_path = str(root / image_path)
        size = None
        if isinstance(rec.get("width"), (int, float)) and isinstance(rec.get("height"), (int, float)):
            size = (int(rec["width"]), int(rec["height"]))
            if not os.path.exists(image_path):
                problems.append(BadRow(file, n, "img_path", f"image file not found: {image_path}"))
                continue
        elif image_path.startswith("sample:"):
            try:
                size = load_image(image_path).size
            except ValueError as e:
                problems.append(BadRow(file, n, "img_path", str(e)))
                continue
        else:
            size = _image_size(image_path, file, n, "img_path", problems)
            if size is None:
                continue
        box = _checked_box(rec["bbox"], size[0], size[1], file, n, "bbox", problems, xywh=False)
        if box is None:
            continue
        sid = str(rec.get("id", rec.get("sent_id", n)))
        samples.append(RecSample(id=sid, split=split, expression=expression.strip(), bbox=box, width=size[0],
                                 height=size[1], image_path=image_path, source_file=file, source_row=n))
    return samples, problems


# ---------------------------------------------------------------------------------------------- specs


def guess_kind(path: str) -> str:
    """``refer``, ``parquet`` or ``jsonl`` for a path without a ``kind:`` prefix."""
    p = Path(path)
    if p.is_dir():
        if any(p.glob("refs(*).p")) or any((p / d).is_dir() for d in DATASETS):
            return "refer"
        if any(p.glob("**/*.parquet")):
            return "parquet"
        raise ValueError(f"{path}: a folder with neither refer files (refcoco/refs(unc).p) nor *.parquet "
                         "files; prefix the data spec with refer:, parquet: or jsonl:")
    if any(c in path for c in "*?["):
        return "parquet"
    if not p.exists():
        raise FileNotFoundError(f"REC data not found: {path}")
    if path.endswith(".parquet"):
        return "parquet"
    if path.endswith((".jsonl", ".json")):
        return "jsonl"
    raise ValueError(f"cannot tell the data kind of {path!r}; write refer:ROOT, parquet:GLOB or jsonl:PATH")


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``kind:path[:option]`` -> ``(kind, path, option)``; the kind is guessed when not given."""
    kind, rest = (spec.split(":", 1) if spec.split(":", 1)[0] in KINDS else (None, spec))
    option = None
    if ":" in rest:
        head, tail = rest.rsplit(":", 1)
        # a trailing ":name" is an option, unless the whole thing is an existing path
        if not os.path.exists(rest) and tail and "/" not in tail and "\\" not in tail:
            rest, option = head, tail
    return kind or guess_kind(rest), rest, option


def load_rec_data(specs: Iterable[str], splits: Iterable[str] | None = None,
                  image_root: str | os.PathLike | None = None) -> tuple[list[RecSample], list[BadRow]]:
    """Samples of every data spec, restricted to ``splits``; raises when nothing is left."""
    samples: list[RecSample] = []
    problems: list[BadRow] = []
    for spec in specs:
        kind, path, option = parse_spec(spec)
        if kind == "refer":
            s, p = read_refer(path, option.split(",") if option else None, image_root=image_root)
        elif kind == "parquet":
            s, p = read_parquet(path, dataset=option)
        else:
            s, p = read_jsonl(path, name=option, image_root=image_root)
        samples += s
        problems += p
    found = sorted({s.split for s in samples})
    chosen = select_splits(found, list(splits) if splits else None)
    if splits and not chosen:
        raise ValueError(f"none of the requested splits {list(splits)} is in the data (found {found})")
    samples = [s for s in samples if s.split in chosen]
    seen: set[tuple[str, str]] = set()
    unique = []
    for s in samples:
        if s.key in seen:
            problems.append(BadRow(s.source_file, s.source_row, "id",
                                   f"duplicate sample id {s.id!r} in split {s.split!r}"))
            continue
        seen.add(s.key)
        unique.append(s)
    if not unique:
        raise ValueError(f"no usable REC samples in {list(specs)} ({len(problems)} bad rows)")
    return unique, problems


# ---------------------------------------------------------------------------------------------- POPE


def pope_subset_name(path: str | os.PathLike) -> str:
    """``coco_pope_adversarial.json`` -> ``adversarial``; other names -> the file stem."""
    stem = Path(path).name.split(".")[0]
    m = re.search(r"pope_(?:[a-z]+_)?(random|popular|adversarial)$", stem, re.IGNORECASE)
    return m.group(1).lower() if m else stem


def read_pope(questions: str | os.PathLike, image_dir: str | os.PathLike
              ) -> tuple[list[PopeQuestion], list[BadRow]]:
    """POPE questions from one file or every ``*pope*.json*`` file of a folder."""
    qpath = Path(questions)
    if qpath.is_dir():
        files = sorted(p for p in qpath.iterdir()
                       if "pope" in p.name.lower() and p.suffix in (".json", ".jsonl"))
        if not files:
            raise FileNotFoundError(f"no POPE question files (*pope*.json) in {qpath}")
    elif qpath.is_file():
        files = [qpath]
    else:
        raise FileNotFoundError(f"POPE questions not found: {qpath}")
    out: list[PopeQuestion] = []
    problems: list[BadRow] = []
    image_dir = Path(image_dir)
    for file in files:
        subset = pope_subset_name(file)
        for n, rec in iter_jsonl(file, problems):
            missing = [k for k in ("question_id", "image", "text", "label") if k not in rec]
            if missing:
                problems.append(BadRow(str(file), n, missing[0], "missing (a POPE line is {\"question_id\", "
                                                                 "\"image\", \"text\", \"label\"})"))
                continue
            label = str(rec["label"]).strip().lower()
            if label not in ("yes", "no"):
                problems.append(BadRow(str(file), n, "label",
                                       f"expected 'yes' or 'no'; got {rec['label']!r}"))
                continue
            image = str(image_dir / rec["image"])
            if not os.path.exists(image):
                problems.append(BadRow(str(file), n, "image", f"image file not found: {image}"))
                continue
            out.append(PopeQuestion(id=str(rec["question_id"]), subset=subset, image=image,
                                    text=str(rec["text"]), label=label, source_file=str(file), source_row=n))
    if not out:
        raise ValueError(f"no usable POPE questions in {qpath} ({len(problems)} bad rows)")
    return out, problems

