"""The binding toy of docs/demo_recipe.md section 11 runs with every flag and reports accuracies."""

import re
import runpy
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "scripts" / "experiments"
SCRIPT = EXPERIMENTS / "binding_toy.py"


def _run(capsys, *args, script=SCRIPT):
    argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    return [tuple(map(float, m)) for m in re.findall(r"two objects ([\d.]+) one object ([\d.]+)", out)]


def test_every_variant_runs(capsys):
    for flags in ([], ["--shared", "--at-word", "--layers", "1"],
                  ["--question-first", "--untie", "--embed-std", "0.2", "--qk-init", "2", "--heads", "2"]):
        rows = _run(capsys, "--grid", "2", "--steps", "2", "--batch", "2", *flags)
        assert len(rows) == 1 and all(0.0 <= v <= 1.0 for v in rows[0])


def test_every_variant_of_the_attention_toy_runs(capsys):
    for flags in ([], ["--input-norm", "--heads", "2"], ["--readout", "residual-norm", "--embed-std", "0.2"]):
        rows = _run(capsys, "--steps", "3", *flags, script=EXPERIMENTS / "binding_toy_attention.py")
        assert len(rows) == 1 and all(0.0 <= v <= 1.0 for v in rows[0])


def test_the_answer_at_the_word_and_the_question_first_are_not_combined(capsys):
    with pytest.raises(SystemExit):
        _run(capsys, "--grid", "2", "--steps", "1", "--at-word", "--question-first")
    assert "--at-word" in capsys.readouterr().err
