"""DiG evaluation: metrics by difficulty and change kind on a small hand-built set, files, overlays, CLI."""

from __future__ import annotations

import argparse
import doctest
import json
from pathlib import Path

import pytest
from PIL import Image

from dig import evaluate
from dig.cli_eval import register_eval
from dig.evaluate import align_predictions, read_predictions, score_predictions, write_report
from dig.pairs import read_pairs
from dig.rewards import RewardConfig

W, H = 100, 80  # padded square: side 100, y offset 10 -> pixel (x, y) is ((x) / 100, (y + 10) / 100)

PAIRS = [
    ("s0", "single", [[10, 10, 40, 40]], ["color"]),
    ("s1", "single", [[50, 20, 80, 60]], ["delete"]),
    ("d0", "dual", [[0, 0, 20, 20], [60, 40, 90, 70]], ["shape", "add"]),
    ("z0", "mixed", [], []),  # no difference: the answer is []
]
ANSWERS = {
    "s0": "[[0.100,0.200,0.400,0.500]]",  # exact
    "s1": "[[0.000,0.700,0.100,0.800]]",  # elsewhere: a miss and a false positive
    "d0": "[[0.000,0.100,0.200,0.300],[0.900,0.100,1.000,0.200]]",  # the shape change, plus a false positive
    "z0": "[]",
}


def _write_pairs(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    with open(root / "pairs.jsonl", "w") as fh:
        for pid, difficulty, boxes, kinds in PAIRS:
            for side, colour in (("a", (90, 90, 90)), ("b", (120, 120, 120))):
                Image.new("RGB", (W, H), colour).save(root / "images" / f"{pid}_{side}.png")
            fh.write(json.dumps({"id": pid, "image_a": f"images/{pid}_a.png", "image_b": f"images/{pid}_b.png",
                                 "boxes": boxes, "changes": [{"kind": k, "object": i} for i, k in enumerate(kinds)],
                                 "difficulty": difficulty, "width": W, "height": H}) + "\n")
    return root


@pytest.fixture()
def pairs_dir(tmp_path: Path) -> Path:
    return _write_pairs(tmp_path / "pairs")


def test_doctests_pass() -> None:
    result = doctest.testmod(evaluate)
    assert result.attempted >= 3 and result.failed == 0


def test_metrics_by_difficulty_and_kind(pairs_dir: Path) -> None:
    records = read_pairs(pairs_dir)
    result = score_predictions(records, [ANSWERS[r["id"]] for r in records], RewardConfig())
    total = result["overall"]
    assert (total["n"], total["n_pred"], total["n_gt"], total["n_hit"]) == (4, 4, 4, 2)
    assert total["precision"] == 0.5 and total["recall"] == 0.5 and total["f1"] == 0.5
    assert total["all_found"] == 0.5  # s0 and z0
    # matched pairs: s0 (IoU 1), s1 (0), d0 shape (1), d0 add vs the false positive (0)
    assert total["mean_iou"] == pytest.approx(0.5)
    single, dual, mixed = (result["by_difficulty"][d] for d in ("single", "dual", "mixed"))
    assert (single["n_hit"], single["n_pred"], single["n_gt"], single["f1"]) == (1, 2, 2, 0.5)
    assert (dual["n_hit"], dual["recall"], dual["precision"]) == (1, 0.5, 0.5)
    assert (mixed["n"], mixed["f1"], mixed["mean_iou"], mixed["reward"]) == (1, 1.0, None, 3.0)
    kinds = result["by_kind"]
    assert {k: v["recall"] for k, v in kinds.items()} == {"color": 1.0, "delete": 0.0, "shape": 1.0, "add": 0.0}
    assert kinds["color"]["mean_iou"] == pytest.approx(1.0) and kinds["add"]["n_gt"] == 1
    rows = {r["id"]: r for r in result["per_sample"]}
    assert rows["s0"]["pred_boxes"] == [[10.0, 10.0, 40.0, 40.0]] and rows["s0"]["pred_hit"] == [True]
    assert rows["d0"]["gt_hit"] == [True, False] and rows["d0"]["kinds"] == ["shape", "add"]
    assert rows["s1"]["reward"] == 1.0  # format only


def test_qwen_answers_map_back_to_pixels(pairs_dir: Path) -> None:
    records = [r for r in read_pairs(pairs_dir) if r["id"] == "s0"]
    result = score_predictions(records, ['[{"bbox_2d": [100, 125, 400, 500]}]'], RewardConfig(box_format="qwen1000"))
    assert result["overall"]["f1"] == 1.0
    assert result["per_sample"][0]["pred_boxes"] == [[10.0, 10.0, 40.0, 40.0]]


def test_report_files_and_overlays(pairs_dir: Path, tmp_path: Path) -> None:
    records = read_pairs(pairs_dir)
    result = score_predictions(records, [ANSWERS[r["id"]] for r in records])
    path = write_report(result, records, tmp_path / "out", vis=2)
    summary = json.loads(path.read_text())
    assert set(summary) == {"config", "overall", "by_difficulty", "by_kind"}
    rows = [json.loads(line) for line in (tmp_path / "out" / "per_sample.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    pngs = sorted((tmp_path / "out" / "vis").glob("*.png"))
    assert len(pngs) == 2
    with Image.open(pngs[0]) as img:
        assert img.size == (2 * W + evaluate.PANEL_GAP, H + evaluate.HEADER)
        assert records[0]["id"] == "d0"  # sorted by id; d0: GT "add" at x 60..90, y 40..70 is missed (green)
        assert img.getpixel((75, 40 + evaluate.HEADER)) == evaluate.GT_COLOUR
        assert img.getpixel((75 + W + evaluate.PANEL_GAP, 40 + evaluate.HEADER)) == evaluate.GT_COLOUR  # on B too
        assert img.getpixel((10, evaluate.HEADER)) == evaluate.HIT_COLOUR  # the hit on the shape change
        assert img.getpixel((95, 10 + evaluate.HEADER)) == evaluate.MISS_COLOUR  # the false positive's top edge


def test_predictions_file_errors(tmp_path: Path, pairs_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "s0", "answer": "[]"}\n{"id": "s1"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, row 2, field 'answer': expected the answer text"):
        read_predictions(bad)
    bad.write_text('{"id": "s0", "answer": "[]"}\n{"id": "s0", "text": "[]"}\n')
    with pytest.raises(ValueError, match="appears twice"):
        read_predictions(bad)
    records = read_pairs(pairs_dir)
    with pytest.raises(ValueError, match="3 of 4 pairs have no prediction"):
        align_predictions(records, {"s0": "[]"})
    texts, missing = align_predictions(records, {"s0": "[]"}, allow_missing=True)
    assert missing == ["d0", "s1", "z0"] and texts[records.index(next(r for r in records if r["id"] == "s0"))] == "[]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinygg eval")
    register_eval(parser.add_subparsers(dest="eval_command"))
    return parser


def test_cli_scores_a_predictions_file(pairs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": k, "answer": v}) + "\n" for k, v in ANSWERS.items()))
    args = _parser().parse_args(["dig", "--pairs", str(pairs_dir), "--predictions", str(preds),
                                 "--out", str(tmp_path / "eval"), "--vis", "1"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "total" in printed and "color" in printed and " 50.00" in printed
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["overall"]["f1"] == 0.5 and metrics["missing_predictions"] == []
    assert len(list((tmp_path / "eval" / "vis").glob("*.png"))) == 1


def test_cli_needs_one_answer_source(pairs_dir: Path, tmp_path: Path) -> None:
    # --model itself is tested with a tiny checkpoint in tests/test_dig_grpo.py
    with pytest.raises(SystemExit):  # exactly one of --model / --predictions
        _parser().parse_args(["dig", "--pairs", str(pairs_dir), "--out", str(tmp_path)])
