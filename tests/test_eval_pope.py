"""POPE: yes/no parsing, hand-computed metrics, and `tinygg eval pope` end to end on the tiny model."""

import json

import pytest
from conftest import random_image

from tinygg.cli import main
from tinygg.evaluate.pope import binary_metrics, parse_yes_no, summarise_pope
from tinygg.evaluate.report import pope_table


@pytest.mark.parametrize("answer, verdict", [
    ("Yes", ("yes", True)), ("no.", ("no", True)), ("NO, there is not.", ("no", True)),
    ("Yes, I see no dog", ("yes", True)), ("There is no dog. Yes.", ("no", True)),
    ("Yesterday I saw it", ("no", False)), ("nothing", ("no", False)), ("", ("no", False)),
])
def test_parse_yes_no(answer, verdict):
    assert parse_yes_no(answer) == verdict


def test_metrics_by_hand():
    labels = ["yes", "yes", "yes", "no", "no"]
    preds = ["yes", "no", "yes", "yes", "no"]  # TP 2, FN 1, FP 1, TN 1
    m = binary_metrics(labels, preds)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(3 / 5)
    never = binary_metrics(["yes", "no"], ["no", "no"])  # never says yes: precision/recall/F1 are 0, not NaN
    assert (never["precision"], never["recall"], never["f1"], never["accuracy"]) == (0.0, 0.0, 0.0, 0.5)


def test_summary_and_table3_layout():
    rows = [{"subset": "random", "label": "yes", "pred": "yes", "parsed": True},
            {"subset": "random", "label": "no", "pred": "no", "parsed": False},
            {"subset": "adversarial", "label": "no", "pred": "yes", "parsed": True},
            {"subset": "adversarial", "label": "yes", "pred": "yes", "parsed": True}]
    m = summarise_pope(rows)
    assert m["subsets"]["random"]["accuracy"] == 1.0 and m["subsets"]["random"]["unparsed"] == 1
    adversarial = m["subsets"]["adversarial"]
    assert adversarial["yes_ratio"] == 1.0 and adversarial["f1"] == pytest.approx(2 / 3)
    assert m["average"]["accuracy"] == pytest.approx(0.75)
    lines = pope_table(m, "tiny").splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:]] == ["Random", "Popular", "Adversarial"]
    assert lines[1].split("|")[1].split() == ["Accuracy", "F1-Score", "Yes"]
    assert lines[3].split("|")[1].split() == ["100.00", "100.00", "50.00"]
    assert lines[3].split("|")[2].split() == ["-", "-", "-"]


def test_cli_pope(tiny_checkpoint, tmp_path, capsys):
    images, qdir = tmp_path / "val2014", tmp_path / "pope"
    images.mkdir()
    qdir.mkdir()
    for i in range(2):
        random_image(48 + 8 * i, 40, seed=i).save(images / f"COCO_val2014_{i:012d}.jpg")
    for subset in ("random", "popular", "adversarial"):
        lines = [{"question_id": k + 1, "image": f"COCO_val2014_{k % 2:012d}.jpg",
                  "text": f"Is there a {obj} in the image?", "label": label}
                 for k, (obj, label) in enumerate([("dog", "yes"), ("car", "no"), ("cat", "no")])]
        lines.append({"question_id": 9, "image": "COCO_val2014_000000000009.jpg", "text": "Is there a cup?",
                      "label": "yes"})
        (qdir / f"coco_pope_{subset}.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    args = ["eval", "pope", "--model", str(tiny_checkpoint), "--questions", str(qdir), "--images",
            str(images), "--out", str(out), "--batch-size", "3", "--max-new-tokens", "3"]
    assert main(args) == 0
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and {r["subset"] for r in rows} == {"random", "popular", "adversarial"}
    m = json.loads((out / "metrics.json").read_text())
    for subset, v in m["subsets"].items():
        mine = [r for r in rows if r["subset"] == subset]
        assert v["n"] == 3
        assert v["accuracy"] == pytest.approx(sum(r["pred"] == r["label"] for r in mine) / 3)
        assert v["yes_ratio"] == pytest.approx(sum(r["pred"] == "yes" for r in mine) / 3)
        assert v["unparsed"] == sum(not r["parsed"] for r in mine)
    assert m["skipped_rows"] == 3  # the missing image, once per subset
    printed = capsys.readouterr().out
    assert "Adversarial" in printed and "F1-Score" in printed
    assert main(args) == 0  # a second run finds everything done and answers nothing again
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 9
