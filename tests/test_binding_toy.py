"""The binding toy of docs/demo_recipe.md section 11 runs with every flag and reports accuracies."""

import json
import re
import runpy
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "scripts" / "experiments"
SCRIPT = EXPERIMENTS / "binding_toy.py"


def _output(capsys, script, *args) -> str:
    """What ``script`` prints when run as a command with ``args``."""
    argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    return capsys.readouterr().out


def _run(capsys, *args, script=SCRIPT):
    out = _output(capsys, script, *args)
    return [tuple(map(float, m)) for m in re.findall(r"two objects ([\d.]+) one object ([\d.]+)", out)]


def test_every_variant_runs(capsys):
    for flags in ([], ["--shared", "--at-word", "--layers", "1"],
                  ["--question-first", "--untie", "--embed-std", "0.2", "--qk-init", "2", "--heads", "2"],
                  ["--text-first", "1", "--text-batch", "3", "--embed-std", "0.2", "--sep-std", "0.01"],
                  ["--gap", "2", "--gap-mix", "--aux-at-word", "1"],
                  ["--question-first", "--gap", "3", "--distinct-gap"],
                  ["--question-first", "--gap", "4", "--gap-every", "1", "--gap-from", "2"]):
        rows = _run(capsys, "--grid", "2", "--steps", "2", "--batch", "2", *flags)
        assert len(rows) == 1 and all(0.0 <= v <= 1.0 for v in rows[0])


def test_the_gap_curriculum_reports_the_current_and_the_final_gap(capsys):
    """One SEP more every step: at step 2 of a schedule to 3 SEPs the gap is 2, and the final layout is scored too."""
    out = _output(capsys, SCRIPT, "--grid", "2", "--steps", "2", "--batch", "2", "--gap", "3", "--gap-every", "1")
    assert re.search(r"^step 2 loss [\d.]+ two objects [\d.]+ one object [\d.]+ \(gap 2\) at gap 3: two [\d.]+ ",
                     out, re.MULTILINE), out


def test_every_variant_of_the_attention_toy_runs(capsys):
    for flags in ([], ["--input-norm", "--heads", "2"], ["--readout", "residual-norm", "--embed-std", "0.2"]):
        rows = _run(capsys, "--steps", "3", *flags, script=EXPERIMENTS / "binding_toy_attention.py")
        assert len(rows) == 1 and all(0.0 <= v <= 1.0 for v in rows[0])


def test_the_answer_at_the_word_and_the_question_first_are_not_combined(capsys):
    with pytest.raises(SystemExit):
        _run(capsys, "--grid", "2", "--steps", "1", "--at-word", "--question-first")
    assert "--at-word" in capsys.readouterr().err


def test_binding_eval_tells_the_named_object_from_another_one():
    landing = runpy.run_path(str(EXPERIMENTS / "binding_eval.py"))["landing"]
    boxes = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert landing([[1, 1, 10, 10]], 0, boxes) == "target"
    assert landing([[1, 1, 10, 10]], 1, boxes) == "other"
    assert landing([[40, 40, 50, 50]], 0, boxes) == "neither"
    assert landing([], 0, boxes) == "neither"


def test_binding_eval_runs_on_a_synthetic_corpus(tmp_path, tiny_checkpoint, capsys):
    from dig.synth import SynthConfig, generate_synth

    corpus = tmp_path / "corpus"
    generate_synth(SynthConfig(out=corpus, n=12, min_objects=2, max_objects=3, tasks=("text2box", "list2box"),
                               relations=False, seed=0, test_fraction=0.5), progress=False)
    out = tmp_path / "counts.json"
    printed = _output(capsys, EXPERIMENTS / "binding_eval.py", "--model", str(tiny_checkpoint), "--corpus",
                      str(corpus), "--limit", "4", "--lists", "--json", str(out))
    counts = json.loads(out.read_text())
    assert len(counts["rec"]) == 4 and len(counts["list2box"]) == 4
    assert {r["landing"] for r in counts["rec"]} <= {"target", "other", "neither"}
    assert all(1 <= r["objects"] <= 3 for r in counts["rec"])
    assert "random object" in printed


def test_binding_eval_names_the_attributes_an_expression_asks_for():
    words_asked = runpy.run_path(str(EXPERIMENTS / "binding_eval.py"))["words_asked"]
    assert words_asked("the small red object") == "size+color"
    assert words_asked("the large gray metal cylinder") == "size+color+material+shape"
    assert words_asked("the object") == "object"


@pytest.mark.parametrize("gap", [-2, 0, 3])
def test_binding_eval_asks_as_the_answer_gap_curriculum_trains(gap):
    """A mid-curriculum checkpoint is asked with exactly the tokens it was trained on before its answer."""
    from PIL import Image

    from tinygg.build import build_model

    at_answer_gap = runpy.run_path(str(EXPERIMENTS / "binding_eval.py"))["at_answer_gap"]
    _, processor = build_model("tiny")
    _, asked = build_model("tiny")
    image = Image.new("RGB", (128, 96))
    question = "Output the coordinate of the red cube\n<image>"
    prefix = at_answer_gap(asked, gap)
    text = asked.format_chat([{"from": "human", "value": question}], add_generation_prompt=True)
    ids = asked(text=[text], images=[[image]])["input_ids"][0].tolist()
    trained = processor.encode_conversation([{"from": "human", "value": question},
                                             {"from": "gpt", "value": "[0.123,0.2,0.3,0.4]"}], [image],
                                            with_pixels=False, answer_gap=gap)["input_ids"]
    assert trained[:len(ids)] == ids
    assert (prefix + processor.tokenizer.decode(trained[len(ids):])).startswith("[0.123,0.2,0.3,0.4]")


def test_the_dig_toy_changes_exactly_one_cell_of_the_named_kind(capsys):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        from dig_toy import COLOURS, KINDS, sample_pairs
    finally:
        sys.path.remove(str(EXPERIMENTS))
    import torch

    a, b, cell, kind = sample_pairs(300, 4, (2, 5), KINDS, torch.Generator().manual_seed(0))
    differ = a != b
    assert differ.sum(1).eq(1).all()  # one changed cell per pair, and it is the answer
    assert differ.float().argmax(1).equal(cell)
    rows = torch.arange(300)
    before, after = a[rows, cell], b[rows, cell]
    named = {n: kind == i for i, n in enumerate(KINDS)}
    assert (before[named["add"]] == COLOURS).all() and (after[named["add"]] < COLOURS).all()
    assert (before[named["delete"]] < COLOURS).all() and (after[named["delete"]] == COLOURS).all()
    assert (before[named["color"]] < COLOURS).all() and (after[named["color"]] < COLOURS).all()
    counts = (a < COLOURS).sum(1)
    assert counts.min() == 2 and counts.max() == 5 and all(named[n].any() for n in KINDS)
    for flags in ([], ["--one-image", "--kinds", "add", "--embed-std", "0.2", "--layers", "1"]):
        out = _output(capsys, EXPERIMENTS / "dig_toy.py", "--grid", "2", "--objects", "1", "2", "--steps", "2",
                      "--batch", "2", *flags)
        assert re.fullmatch(r"step 2 loss [\d.]+ accuracy [\d.]+ \((\w+ [\d.]+ ?)+\) \d+s\n", out), out
