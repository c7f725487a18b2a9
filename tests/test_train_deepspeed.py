"""`bash scripts/stage2.sh` through the real deepspeed launcher: 2 CPU processes, ZeRO-2, gloo."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
@pytest.mark.deepspeed
def test_stage2_script_under_deepspeed_zero2(rec_train_json, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import tinygg  # noqa: F401

    out = tmp_path / "stage2"
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions")))
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "stage2.sh"), "preset=tiny", f"data={rec_train_json}",
         f"image_root={rec_train_json.parent / 'imgs'}", f"output_dir={out}", "max_steps=10", "batch_size=8",
         "logging_steps=1", "save_steps=5", "learning_rate=1e-3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "num_local_procs=2" in log  # the deepspeed launcher started two processes
    assert log.count("done: ") == 2  # both ranks finished
    cfg = json.loads((out / "checkpoint-5" / "trainer_state.json").read_text())
    assert cfg["max_steps"] == 10
    ds_states = list((out / "checkpoint-5").rglob("*optim_states.pt"))
    assert len(ds_states) == 2  # ZeRO-2 partitions the optimizer state over the 2 ranks
    hist = [json.loads(x) for x in (out / "log_history.jsonl").read_text().splitlines()]
    losses = [h["loss"] for h in hist if "loss" in h]
    assert len(losses) == 10 and losses[-1] < losses[0] - 0.5
    model = AutoModelForImageTextToText.from_pretrained(out / "final")
    AutoProcessor.from_pretrained(out / "final")
    assert model.config.model_type == "tinygg"
