"""Model cards: a README.md for a checkpoint, from its eval JSON files or its registry metrics.

Eval JSON files read here (one document per file, or a mapping of several documents):

* REC (``tinygg eval rec``): ``{"metric": "acc@0.5", "splits": {name: {"acc", "n", "parse_failures"}},
  "average"}``. The eight standard splits (RefCOCO val/testA/testB, RefCOCO+ val/testA/testB,
  RefCOCOg val/test) go into the paper's Table 1 layout; any other split (e.g. the synthetic test of
  the CPU demo) into a second table.
* POPE (``tinygg eval pope``): ``{"metric": "pope", "subsets": {"random"|"popular"|"adversarial":
  {"accuracy", "f1", "yes_ratio"[, "precision", "recall", "n"]}}}`` (``splits`` for ``subsets``, ``acc``
  and ``yes`` are accepted too): the paper's Table 3 layout.
* DiG (``tinygg eval dig``): ``{"overall": {...}, "by_difficulty": {name: {"f1", "precision", "recall",
  "mean_iou", ...}}, ...}``, or ``{"metric": "dig", "splits": {name: {"f1"[, "iou", ...]}}}``.

All values are fractions in [0, 1]; tables print them as percentages with two decimals, as the papers do.
The same parser turns eval JSON into the ``metrics`` of a registry entry (:func:`metrics_from_eval`),
so a card rendered from the registry and one rendered from the files agree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .registry import Entry, Registry, UnknownModelError, load_registry

REC_SPLITS = (
    ("refcoco/val", "RefCOCO val"),
    ("refcoco/testA", "RefCOCO testA"),
    ("refcoco/testB", "RefCOCO testB"),
    ("refcoco+/val", "RefCOCO+ val"),
    ("refcoco+/testA", "RefCOCO+ testA"),
    ("refcoco+/testB", "RefCOCO+ testB"),
    ("refcocog/val", "RefCOCOg val"),
    ("refcocog/test", "RefCOCOg test"),
)
POPE_SUBSETS = ("random", "popular", "adversarial")
# Reported in the TinyGroundingGPT paper (Table 1 and Table 3), shown as reference rows.
PAPER_REC = {
    "TinyGroundingGPT-3B (paper)": (89.16, 92.24, 85.38, 81.70, 87.16, 75.09, 83.27, 84.08, 84.76),
    "TinyGroundingGPT-1.5B (paper)": (86.76, 90.42, 81.81, 78.86, 84.65, 70.24, 79.88, 80.04, 81.58),
}
PAPER_POPE = {  # (accuracy, f1, yes) for random, popular, adversarial
    "TinyGroundingGPT-3B (paper)": (89.93, 89.47, 43.08, 88.56, 87.90, 43.43, 86.77, 86.22, 45.26),
    "TinyGroundingGPT-1.5B (paper)": (89.59, 88.98, 42.92, 88.67, 87.90, 42.87, 86.74, 86.04, 44.77),
}
_ALIASES = {"acc": "accuracy", "yes": "yes_ratio", "yes-ratio": "yes_ratio", "mean_iou": "iou"}


class EvalFileError(ValueError):
    """An eval JSON file does not follow the contract; the message names the file and field."""


def canonical_rec_split(name: str) -> str:
    """``refcoco+/testA`` for any spelling of a standard split (``RefCOCO+_testA``, ``refcoco_plus testa``,
    ``refcocog_umd_val``); other names are returned unchanged.

    >>> [canonical_rec_split(s) for s in ("RefCOCO+ testA", "refcocog_umd_test", "synthetic")]
    ['refcoco+/testA', 'refcocog/test', 'synthetic']
    """
    key = name.lower().replace("plus", "+")
    key = re.sub(r"(?<![a-z])(unc|umd|google)(?![a-z])", "", key)
    key = re.sub(r"[\s_\-/.:]+", "", key)
    for canon, _ in REC_SPLITS:
        if key == canon.lower().replace("/", ""):
            return canon
    return name


def _fraction(value: Any, path: Path, fld: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise EvalFileError(f"{path}: field '{fld}': expected a fraction in [0, 1], got {value!r}")
    return float(value)


def _is_dig_report(doc: Any) -> bool:
    """``tinygg eval dig`` writes ``{"overall", "by_difficulty", "by_kind", "config"}`` (no ``metric``)."""
    return isinstance(doc, Mapping) and "overall" in doc and "by_difficulty" in doc


def _is_document(doc: Any) -> bool:
    return isinstance(doc, Mapping) and ("metric" in doc or _is_dig_report(doc))


def _parse_document(doc: Mapping[str, Any], path: Path, where: str) -> tuple[str, dict[str, float]]:
    metric = doc.get("metric")
    if _is_dig_report(doc):
        metric, key = "dig", "by_difficulty"
        splits: Any = {**(doc.get("by_difficulty") or {}), "overall": doc.get("overall")}
    else:
        key = "subsets" if "subsets" in doc and "splits" not in doc else "splits"
        splits = doc.get(key)
    if not isinstance(splits, Mapping) or not splits:
        raise EvalFileError(
            f"{path}: field '{where}{key}': expected a non-empty mapping split -> values, got {splits!r}"
        )
    out: dict[str, float] = {}
    if metric == "acc@0.5":
        for name, v in splits.items():
            if not isinstance(v, Mapping) or "acc" not in v:
                raise EvalFileError(
                    f"{path}: field '{where}{key}.{name}': expected {{acc, n, parse_failures}}, got {v!r}"
                )
            out[canonical_rec_split(str(name))] = _fraction(v["acc"], path, f"{where}{key}.{name}.acc")
        avg = doc.get("average")
        out["average"] = (
            _fraction(avg, path, f"{where}average") if avg is not None else sum(out.values()) / len(out)
        )
        return "rec", out
    if isinstance(metric, str) and metric.lower().startswith("pope"):
        task, required, optional = "pope", ("accuracy", "f1", "yes_ratio"), ("precision", "recall")
    elif isinstance(metric, str) and metric.lower().startswith("dig"):
        task, required, optional = "dig", ("f1",), ("precision", "recall", "iou")
    else:
        raise EvalFileError(
            f"{path}: field '{where}metric': expected 'acc@0.5' (REC), 'pope' or 'dig', got {metric!r}"
        )
    for name, v in splits.items():
        if not isinstance(v, Mapping):
            raise EvalFileError(f"{path}: field '{where}{key}.{name}': expected a mapping, got {v!r}")
        values = {_ALIASES.get(k, k): x for k, x in v.items()}
        for k in required:
            if values.get(k) is None:
                raise EvalFileError(f"{path}: field '{where}{key}.{name}.{k}': missing (has {sorted(v)})")
        for k in required + optional:
            if values.get(k) is not None:  # e.g. DiG's mean_iou is null when nothing was matched
                out[f"{name}/{k}"] = _fraction(values[k], path, f"{where}{key}.{name}.{k}")
    return task, out


def load_eval(path: str | Path) -> dict[str, dict[str, float]]:
    """Parse one eval JSON file into ``{task: {metric: value}}`` (tasks: rec, pope, dig)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalFileError(f"{path}: cannot read eval JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise EvalFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if _is_document(data):
        docs = [(data, "")]
    else:
        docs = [(v, f"{k}.") for k, v in data.items() if _is_document(v)]
    if not docs:
        raise EvalFileError(
            f"{path}: field 'metric': missing (expected an eval document, or a mapping of them)"
        )
    out: dict[str, dict[str, float]] = {}
    for doc, where in docs:
        task, values = _parse_document(doc, path, where)
        out.setdefault(task, {}).update(values)
    return out


def metrics_from_eval(paths: Iterable[str | Path]) -> dict[str, dict[str, float]]:
    """Merge several eval JSON files into registry ``metrics`` (later files win on a clash)."""
    out: dict[str, dict[str, float]] = {}
    for p in paths:
        for task, values in load_eval(p).items():
            out.setdefault(task, {}).update(values)
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100.0 * x:.2f}"


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _table(header: list[str], rows: list[list[str]], *, numeric: bool = True) -> str:
    align = ["---"] + ["---:" if numeric else "---"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


_SIZE = {"1.5b": "1.5B", "3b": "3B", "7b": "7B"}


def rec_tables(rec: Mapping[str, float], label: str, size: str) -> str:
    """The REC section: the paper's Table 1 layout for the standard splits, then any other splits."""
    parts: list[str] = []
    standard = [rec.get(k) for k, _ in REC_SPLITS]
    present = [x for x in standard if x is not None]
    if present:
        avg = sum(present) / len(present)
        header = ["Model", "LLM size"] + [t for _, t in REC_SPLITS] + ["Avg"]
        rows = [
            [label, size] + [_pct(x) for x in standard] + [_pct(avg) + ("" if len(present) == 8 else "*")]
        ]
        for name, vals in PAPER_REC.items():
            rows.append([name, name.split("-")[1].split(" ")[0]] + [f"{v:.2f}" for v in vals])
        parts.append(_table(header, rows))
        if len(present) < 8:
            splits = "split" if len(present) == 1 else "splits"
            parts.append(
                f"\\* average over the {len(present)} standard {splits} evaluated (the paper averages all 8)."
            )
    other = {k: v for k, v in rec.items() if k not in dict(REC_SPLITS) and k != "average"}
    if other:
        rows = [[k, _pct(v)] for k, v in sorted(other.items())]
        if not present and "average" in rec:
            rows.append(["**average**", _pct(rec["average"])])
        parts.append(_table(["Split", "Acc@0.5 (%)"], rows))
    return "\n\n".join(parts)


def pope_table(pope: Mapping[str, float], label: str, size: str) -> str:
    header = ["Model", "LLM size"] + [
        f"{s.capitalize()} {m}" for s in POPE_SUBSETS for m in ("Acc", "F1", "Yes")
    ]
    row = [label, size] + [
        _pct(pope.get(f"{s}/{m}")) for s in POPE_SUBSETS for m in ("accuracy", "f1", "yes_ratio")
    ]
    rows = [row] + [
        [n, n.split("-")[1].split(" ")[0]] + [f"{v:.2f}" for v in vals] for n, vals in PAPER_POPE.items()
    ]
    extra = sorted({k.split("/")[0] for k in pope} - set(POPE_SUBSETS))
    out = _table(header, rows)
    if extra:
        out += "\n\n" + _table(
            ["Subset", "Acc", "F1", "Yes"],
            [[s] + [_pct(pope.get(f"{s}/{m}")) for m in ("accuracy", "f1", "yes_ratio")] for s in extra],
        )
    return out


def dig_table(dig: Mapping[str, float]) -> str:
    splits = sorted({k.split("/")[0] for k in dig})
    rows = [[s] + [_pct(dig.get(f"{s}/{m}")) for m in ("f1", "precision", "recall", "iou")] for s in splits]
    return _table(["Split", "F1", "Precision", "Recall", "Mean IoU"], rows)


def render_card(
    entry: Entry | None,
    metrics: Mapping[str, Mapping[str, float]],
    *,
    title: str | None = None,
    lineage: list[str] | None = None,
) -> str:
    """Markdown (with Hugging Face front matter) for a checkpoint and its metrics."""
    name = title or (entry.name if entry else "checkpoint")
    preset = entry.preset if entry else None
    size = _SIZE.get((preset or "").lower(), preset or "–")
    front = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [tinygroundinggpt, visual-grounding, referring-expression-comprehension]",
    ]
    if entry and entry.license:
        front.append(f"license: {entry.license}")
    front.append("---")
    lines = ["\n".join(front), f"# {name}", ""]
    if entry and entry.description:
        lines += [entry.description, ""]
    if entry:
        facts = [
            ("Kind", entry.kind),
            ("Preset", entry.preset),
            ("Stage", entry.stage),
            ("Parent", " ← ".join(lineage) if lineage else entry.parent),
            ("Source", entry.source.describe()),
        ]
        if entry.files:
            total = sum(f.size or 0 for f in entry.files)
            facts.append(
                (
                    "Files",
                    f"{len(entry.files)}, sha256-pinned" + (f", {_human_bytes(total)}" if total else ""),
                )
            )
        lines += [
            _table(
                ["Field", "Value"],
                [[k, f"`{v}`" if k == "Source" else str(v)] for k, v in facts if v],
                numeric=False,
            ),
            "",
        ]
    lines += [
        "## Usage",
        "",
        "```bash",
        f"tinygg zoo download {name}",
        "```",
        "",
        "```python",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "from model_zoo import resolve_model",
        "",
        f'path = resolve_model("{name}")',
        "model = AutoModelForImageTextToText.from_pretrained(path)",
        "processor = AutoProcessor.from_pretrained(path)",
        "```",
        "",
    ]
    sections = {  # task -> (heading, what the numbers mean, table renderer)
        "rec": (
            "Referring expression comprehension (REC)",
            (
                "Acc@0.5: share of expressions whose predicted box has IoU >= 0.5 with the ground truth (%). "
                "Boxes are `[x1,y1,x2,y2]` text normalised to the padded square."
            ),
            lambda m: rec_tables(m, name, size),
        ),
        "pope": (
            "Object hallucination (POPE)",
            "Accuracy, F1 and the share of 'yes' answers (%), per sampling subset.",
            lambda m: pope_table(m, name, size),
        ),
        "dig": (
            "Differential grounding (DiG)",
            (
                "Boxes of all differences between two images, matched one-to-one (Hungarian) to the ground "
                "truth; F1 over matches at IoU >= the threshold, mean IoU of the matches (%)."
            ),
            dig_table,
        ),
    }
    for task, (heading, meaning, render) in sections.items():
        if metrics.get(task):
            lines += [f"## {heading}", "", meaning, "", render(metrics[task]), ""]
    if not any(metrics.get(k) for k in ("rec", "pope", "dig")):
        lines += [
            "## Evaluation",
            "",
            (
                f"No evaluation results recorded yet: `tinygg eval rec --model {name} ...`, then "
                f"`tinygg zoo card {name} --eval metrics.json`."
            ),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def card(
    name_or_dir: str | Path, eval_json_paths: Iterable[str | Path] = (), *, registry: Registry | None = None
) -> str:
    """README.md text for a zoo checkpoint (or a checkpoint directory), from the given eval JSON files,
    else from the metrics stored in its registry entry."""
    reg = registry if registry is not None else load_registry()
    raw = str(name_or_dir)
    entry: Entry | None = None
    try:
        entry = reg.get(raw)
    except UnknownModelError:
        if not Path(raw).expanduser().is_dir():
            raise
    paths = list(eval_json_paths)
    metrics = metrics_from_eval(paths) if paths else dict(entry.metrics) if entry else {}
    lineage: list[str] = []
    seen = set()
    parent = entry.parent if entry else None
    while parent and parent not in seen and parent in reg:
        seen.add(parent)
        lineage.append(parent)
        parent = reg.get(parent).parent
    title = entry.name if entry else Path(raw).expanduser().resolve().name
    return render_card(entry, metrics, title=title, lineage=lineage)
