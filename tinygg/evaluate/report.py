"""Printed tables in the paper's layouts: Table 1 (REC Acc@0.5) and Table 3 (POPE).

>>> m = {"splits": {"refcoco_val": {"acc": 0.8676, "n": 10, "parse_failures": 0}}, "average": 0.8676}
>>> print(rec_table(m, "tinygg-1.5b").splitlines()[3])
tinygg-1.5b | 86.76     -     - |     -     -     - |     -     - | 86.76
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# (group title, dataset key, splits) in the column order of the paper's Table 1.
TABLE1 = (("RefCOCO", "refcoco", ("val", "testA", "testB")),
          ("RefCOCO+", "refcoco+", ("val", "testA", "testB")),
          ("RefCOCOg", "refcocog", ("val", "test")))
# POPE subsets in the column order of the paper's Table 3.
TABLE3 = ("random", "popular", "adversarial")
MISSING = "-"


def grouped_table(row_label: tuple[str, str], groups: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    """A one-row table with a two-line header: group titles over their columns.

    ``row_label`` is (header, value); each group is (title, [(column, value), ...]).
    """
    label_w = max(len(row_label[0]), len(row_label[1]))
    cells_top = [" " * label_w]
    cells_mid = [row_label[0].ljust(label_w)]
    cells_val = [row_label[1].ljust(label_w)]
    for title, cols in groups:
        widths = [max(5, len(c), len(v)) for c, v in cols]
        mid = " ".join(c.rjust(w) for (c, _), w in zip(cols, widths))
        val = " ".join(v.rjust(w) for (_, v), w in zip(cols, widths))
        width = max(len(mid), len(title))
        cells_top.append(title.center(width))
        cells_mid.append(mid.rjust(width))
        cells_val.append(val.rjust(width))
    return "\n".join(" | ".join(c) for c in (cells_top, cells_mid)) + "\n" + \
        "-+-".join("-" * len(c) for c in cells_mid) + "\n" + " | ".join(cells_val)


def _pct(x: float | None) -> str:
    return MISSING if x is None else f"{100 * x:.2f}"


def rec_table(metrics: dict[str, Any], model: str = "model") -> str:
    """Acc@0.5 (%) per split in the Table 1 layout; splits not run are '-', other splits in extra columns."""
    splits = metrics["splits"]
    groups = []
    known = set()
    for title, ds, names in TABLE1:
        cols = []
        for name in names:
            key = f"{ds}_{name}"
            known.add(key)
            cols.append((name, _pct(splits[key]["acc"]) if key in splits else MISSING))
        groups.append((title, cols))
    groups.append(("", [("Avg", _pct(metrics.get("average")))]))
    extra = [(k, _pct(v["acc"])) for k, v in splits.items() if k not in known]
    if extra:
        groups.append(("other splits", extra))
    return grouped_table(("Model", model), groups)


def rec_details(metrics: dict[str, Any]) -> str:
    """Per split: n, hits, parse failures, Acc@0.5."""
    lines = [f"{'split':<20} {'n':>7} {'hits':>7} {'no box':>7} {'acc@0.5':>8}"]
    for name, v in metrics["splits"].items():
        hits = v.get("hits", round(v["acc"] * v["n"]))
        lines.append(f"{name:<20} {v['n']:>7} {hits:>7} {v['parse_failures']:>7} {_pct(v['acc']):>8}")
    return "\n".join(lines)


def pope_table(metrics: dict[str, Any], model: str = "model") -> str:
    """Accuracy, F1 and yes-ratio (%) per subset in the Table 3 layout; other subsets in extra columns."""
    subsets = metrics["subsets"]
    order = [s for s in TABLE3] + [s for s in subsets if s not in TABLE3]
    groups = []
    for name in order:
        v = subsets.get(name)
        if v is None and name not in TABLE3:
            continue
        groups.append((name.capitalize(), [("Accuracy", _pct(v["accuracy"]) if v else MISSING),
                                           ("F1-Score", _pct(v["f1"]) if v else MISSING),
                                           ("Yes", _pct(v["yes_ratio"]) if v else MISSING)]))
    return grouped_table(("Model", model), groups)


def pope_details(metrics: dict[str, Any]) -> str:
    """Per subset: n, accuracy, precision, recall, F1, yes-ratio, unparsed answers."""
    head = (f"{'subset':<14} {'n':>6} {'acc':>7} {'prec':>7} {'recall':>7} {'f1':>7} {'yes':>7} "
            f"{'unparsed':>8}")
    lines = [head]
    for name, v in metrics["subsets"].items():
        lines.append(f"{name:<14} {v['n']:>6} {_pct(v['accuracy']):>7} {_pct(v['precision']):>7} "
                     f"{_pct(v['recall']):>7} {_pct(v['f1']):>7} {_pct(v['yes_ratio']):>7} "
                     f"{v['unparsed']:>8}")
    return "\n".join(lines)
