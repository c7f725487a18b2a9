"""`tinygg eval rec` end to end on the tiny random model: batch-size invariance, resume after an interrupted
run, scoring existing predictions, overlays and the metrics.json contract."""

import copy
import json

import pytest
import torch
from conftest import random_image
from PIL import Image

from tinygg.boxes import format_box, pixel_to_square
from tinygg.cli import main
from tinygg.evaluate.rec import evaluate_rec
from tinygg.evaluate.sources import read_jsonl

SIZES = [(64, 48), (40, 70), (90, 30), (50, 50), (33, 61)]
EXPRESSIONS = ["the cat", "the small red cube on the left of the picture", "a dog", "it",
               "the second person from the right wearing a hat"]


@pytest.fixture
def rec_jsonl(tmp_path):
    """Shikra-style test_rec.jsonl (as `tinygg data synth` writes it): five non-square images, one bad row."""
    lines = []
    for i, ((w, h), exp) in enumerate(zip(SIZES, EXPRESSIONS)):
        random_image(w, h, seed=i).save(tmp_path / f"im{i}.png")
        lines.append({"img_path": f"im{i}.png", "expression": exp, "bbox": [2, 3, w // 2, h // 2],
                      "id": f"s{i}"})
    lines.append({"img_path": "absent.png", "expression": "nothing", "bbox": [1, 1, 5, 5], "id": "bad"})
    path = tmp_path / "test_rec.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.fixture(scope="module")
def sharp_model(tiny_model):
    """The tiny model with its LLM weights scaled up: greedy answers become long input-dependent token strings
    (the plain random model repeats one token), so any difference between batched (left-padded) and
    one-by-one generation would show."""
    model, processor = tiny_model
    sharp = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in sharp.model.language_model.named_parameters():
            if "norm" not in name:
                p.mul_(4.0)
    return sharp, processor


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_results_identical_across_batch_sizes(sharp_model, rec_jsonl, tmp_path):
    model, processor = sharp_model
    force = {"min_new_tokens": 6, "suppress_tokens": processor.tokenizer.all_special_ids}
    samples, problems = read_jsonl(rec_jsonl)
    assert len(samples) == 5 and len(problems) == 1
    runs = {}
    for bs in (1, 3):
        metrics = evaluate_rec(model, processor, samples, tmp_path / f"bs{bs}", batch_size=bs,
                               max_new_tokens=6, progress=False, gen_kwargs=force)
        rows = {r["id"]: r for r in _lines(tmp_path / f"bs{bs}" / "predictions.jsonl")}
        runs[bs] = (metrics, rows)
    assert runs[1][1].keys() == {f"s{i}" for i in range(5)}
    assert len({r["answer"] for r in runs[1][1].values()}) == 5  # five different answers
    assert {k: r["answer"] for k, r in runs[1][1].items()} == {k: r["answer"] for k, r in runs[3][1].items()}
    assert runs[1][0]["splits"] == runs[3][0]["splits"]
    assert runs[1][1]["s1"]["prompt"] == "Output the coordinate of " + EXPRESSIONS[1]


def test_cli_resumes_an_interrupted_run(tiny_checkpoint, rec_jsonl, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["eval", "rec", "--model", str(tiny_checkpoint), "--data", f"jsonl:{rec_jsonl}:synth_test",
            "--out", str(out), "--batch-size", "2", "--max-new-tokens", "4"]
    assert main(base + ["--limit", "2"]) == 0  # an "interrupted" run: two samples done
    first = out.joinpath("predictions.jsonl").read_text()
    assert len(first.splitlines()) == 2
    with open(out / "predictions.jsonl", "a") as f:  # killed in the middle of writing a line
        f.write('{"id": "s4", "split": "synth_te')
    assert main(base + ["--vis", "2"]) == 0
    text = out.joinpath("predictions.jsonl").read_text()
    assert text.startswith(first)  # the finished answers were kept, not generated again
    ids = [r["id"] for r in map(json.loads, text.splitlines())]
    assert sorted(ids) == [f"s{i}" for i in range(5)] and len(set(ids)) == 5
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"metric", "iou_threshold", "splits", "average"} <= metrics.keys()
    assert metrics["metric"] == "acc@0.5" and metrics["iou_threshold"] == 0.5
    split = metrics["splits"]["synth_test"]
    assert split["n"] == 5 and isinstance(split["acc"], float) and isinstance(split["parse_failures"], int)
    assert metrics["skipped_rows"] == 1
    skipped = _lines(out / "skipped.jsonl")
    assert (skipped[0]["file"], skipped[0]["row"], skipped[0]["field"]) == (str(rec_jsonl), 6, "img_path")
    pngs = sorted((out / "vis").glob("*.png"))
    assert len(pngs) == 2
    assert Image.open(pngs[0]).width == SIZES[0][0]
    printed = capsys.readouterr().out
    assert "RefCOCO+" in printed and "synth_test" in printed and "IoU(pred, GT) >= 0.5" in printed
    # resuming with another prompt would mix two runs in one table: refused
    assert main(base + ["--prompt", "Where is <exp>?"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_cli_prompt_reads_backslash_n_as_a_newline(tiny_checkpoint, rec_jsonl, tmp_path):
    # typed in a shell, 'of <exp>\n<image>' arrives as backslash + n: it asks the question before the image
    out = tmp_path / "qf"
    assert main(["eval", "rec", "--model", str(tiny_checkpoint), "--data", f"jsonl:{rec_jsonl}:synth_test",
                 "--out", str(out), "--limit", "1", "--max-new-tokens", "2",
                 "--prompt", r"Output the coordinate of <exp>\n<image>"]) == 0
    row = _lines(out / "predictions.jsonl")[0]
    assert row["prompt"] == f"Output the coordinate of {EXPRESSIONS[0]}\n<image>"


def test_cli_scores_existing_predictions(rec_jsonl, tmp_path, capsys):
    samples = {s.id: s for s in read_jsonl(rec_jsonl)[0]}  # (sizes and GT boxes of the samples)

    def square(sid, box):
        s = samples[sid]
        return format_box(pixel_to_square(box, s.width, s.height))

    g = {sid: list(s.bbox) for sid, s in samples.items()}
    x1, y1, x2, y2 = g["s3"]
    answers = [
        {"question_id": "s0", "text": f"It is {square('s0', g['s0'])}."},  # exact: hit
        {"id": "s1", "answer": "no idea"},  # parse failure: miss
        {"id": "s2", "prediction": square("s2", [0, 0, 3, 3])},  # wrong place: miss
        # half the GT's width: IoU 0.5 up to the 3-decimal rounding of the text (50x50 image: exact)
        {"id": "s3", "output": square("s3", [x1, y1, x1 + (x2 - x1) / 2, y2])},
        {"id": "s4", "split": "test", "answer": "[0,0,1,1]"},  # a bare split name that names one sample: ok
        {"id": "nope", "answer": "[0,0,1,1]"},  # not in the data: reported
        {"answer": "[0,0,1,1]"},  # no id: reported
    ]
    pred = tmp_path / "other_system.jsonl"
    pred.write_text("".join(json.dumps(a) + "\n" for a in answers))
    out = tmp_path / "scored"
    assert main(["eval", "rec", "--predictions", str(pred), "--data", f"jsonl:{rec_jsonl}:refcocog_test",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["splits"]["refcocog_test"] == {"acc": 0.4, "n": 5, "parse_failures": 1, "hits": 2}
    assert m["skipped_rows"] == 3  # the data's missing image, the unknown id, the line without an id
    rows = {r["id"]: r for r in _lines(out / "predictions.jsonl")}
    assert rows["s3"]["iou"] == 0.5 and rows["s3"]["hit"]
    # our own predictions.jsonl carries its GT: it can be scored again without --data
    out2 = tmp_path / "rescored"
    assert main(["eval", "rec", "--predictions", str(out / "predictions.jsonl"), "--out", str(out2)]) == 0
    assert json.loads((out2 / "metrics.json").read_text())["splits"] == m["splits"]
    assert main(["eval", "rec", "--predictions", str(pred), "--out", str(tmp_path / "x")]) == 2
    assert "no scorable predictions" in capsys.readouterr().err
