"""Training runs of the tiny model in one process: loss falls, freezing holds, LoRA merges, resume."""

import json
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tinygg.train.config import load_config
from tinygg.train.trainer import run


def _cfg(rec_train_json, out, *extra):
    return load_config(None, [f"data={rec_train_json}", f"image_root={rec_train_json.parent / 'imgs'}",
                              "preset=tiny", f"output_dir={out}", "batch_size=8", "per_device_batch_size=4",
                              "logging_steps=1", "save_steps=1000", "learning_rate=1e-3", *extra])


def _weights(final):
    """The exported weights under the model's own parameter names (files keep the hub's original names)."""
    from transformers import AutoModelForImageTextToText

    import tinygg  # noqa: F401

    return AutoModelForImageTextToText.from_pretrained(final).state_dict()


def _losses(out):
    return [json.loads(x) for x in (out / "log_history.jsonl").read_text().splitlines()]


def test_stage_run_loss_falls_and_exports(rec_train_json, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import tinygg  # noqa: F401

    out = tmp_path / "run"
    final = run(_cfg(rec_train_json, out, "max_steps=8"))
    losses = [h["loss"] for h in _losses(out) if "loss" in h]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5
    assert (out / "loss.png").stat().st_size > 1000 and (final / "train_config.yaml").exists()
    AutoModelForImageTextToText.from_pretrained(final)
    AutoProcessor.from_pretrained(final)


def test_a_half_precision_checkpoint_trains_in_fp32(rec_train_json, tmp_path):
    """Fine-tuning a fp16 checkpoint (the shipped tiny ones are) keeps fp32 master weights: training the half
    weights themselves overflowed to NaN within three steps at lr 1e-3 on a CPU."""
    import math

    from tinygg.build import build_model
    from tinygg.train.trainer import load_init

    model, processor = build_model("tiny")
    half = tmp_path / "half"
    model.to(torch.float16).save_pretrained(half)
    processor.save_pretrained(half)
    cfg = _cfg(rec_train_json, tmp_path / "ft", "max_steps=4")
    cfg.init = str(half)
    assert {p.dtype for p in load_init(cfg)[0].parameters()} == {torch.float32}
    run(cfg)
    losses = [h["loss"] for h in _losses(tmp_path / "ft") if "loss" in h]
    assert len(losses) == 4 and all(math.isfinite(x) and x > 0 for x in losses)


def test_projector_only_changes_no_other_weight(rec_train_json, tmp_path):
    out = tmp_path / "p1"
    final = run(_cfg(rec_train_json, out, "max_steps=3", "freeze.llm=frozen", "freeze.projector=full"))
    from tinygg.build import build_model
    before = build_model("tiny", seed=0)[0].state_dict()
    after = _weights(final)
    changed = {k for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("model.multi_modal_projector.") for k in changed), sorted(changed)[:5]


def test_lora_is_merged_on_export(rec_train_json, tmp_path):
    from transformers import AutoModelForImageTextToText

    import tinygg  # noqa: F401

    out = tmp_path / "lora"
    final = run(_cfg(rec_train_json, out, "max_steps=3", "freeze.llm=lora", "lora.r=4", "lora.alpha=8"))
    assert not any("lora" in k for k in load_file(final / "model.safetensors"))
    after = _weights(final)
    from tinygg.build import build_model
    before = build_model("tiny", seed=0)[0].state_dict()
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(after[q], before[q])  # the adapter was merged into the base weight
    assert torch.equal(after["model.vision_tower.clip.embeddings.patch_embedding.weight"],
                       before["model.vision_tower.clip.embeddings.patch_embedding.weight"])
    AutoModelForImageTextToText.from_pretrained(final)


def test_feature_cache_gives_the_same_loss(rec_train_json, tmp_path):
    a = run(_cfg(rec_train_json, tmp_path / "a", "max_steps=2", "feature_cache=true"))
    b = run(_cfg(rec_train_json, tmp_path / "b", "max_steps=2", "feature_cache=false"))
    la = [h["loss"] for h in _losses(tmp_path / "a") if "loss" in h]
    lb = [h["loss"] for h in _losses(tmp_path / "b") if "loss" in h]
    assert la == pytest.approx(lb, rel=2e-3)  # float16 cache vs float32 towers
    assert any((tmp_path / "a" / "feature_cache").rglob("*.npy")) and a.exists() and b.exists()


@pytest.mark.slow
def test_killed_run_resumes_the_same_curve(rec_train_json, tmp_path):
    """A run killed after its first checkpoint resumes there and continues the uninterrupted run's curve."""
    args = [f"data={rec_train_json}", f"image_root={rec_train_json.parent / 'imgs'}", "preset=tiny",
            "batch_size=8", "per_device_batch_size=4", "logging_steps=1", "save_steps=3", "learning_rate=1e-3",
            "max_steps=6", "feature_cache=false"]
    ref = tmp_path / "ref"
    run(load_config(None, args + [f"output_dir={ref}"]))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tinygg.train", *args, f"output_dir={out}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "checkpoint-3" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert not (out / "final").exists()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got = {h["step"]: h["loss"] for h in _losses(out) if "loss" in h}
    want = {h["step"]: h["loss"] for h in _losses(ref) if "loss" in h}
    assert sorted(got) == list(range(1, 7))
    for step in range(1, 7):
        assert got[step] == pytest.approx(want[step], rel=1e-4), step


def test_feature_cache_ranks_cover_every_picture_whatever_is_cached(rec_train_json, tmp_path, tiny_model):
    """Ranks split the same key list even when one rank already wrote part of its share."""
    from tinygg.data.dataset import DataSource, SupervisedDataset, mix
    from tinygg.train.feature_cache import FeatureCache

    model, processor = tiny_model
    cache = FeatureCache(tmp_path / "cache", "fp")
    items = mix([DataSource(str(rec_train_json), image_root=str(rec_train_json.parent / "imgs"))])
    ds = SupervisedDataset(items, processor, feature_cache=cache)
    tower = model.model.vision_tower
    cache.fill(ds, tower, rank=0, world=2)  # rank 0 finishes first ...
    cache.fill(ds, tower, rank=1, world=2)  # ... then rank 1 looks at the disk
    for i in range(len(ds)):
        # the towers' patch grid, before any image-token merge (tinygg.modeling.merge_patches)
        assert ds[i]["vision_features"].shape == (1, model.config.grid_size ** 2, model.config.vision_feature_dim)


def test_feature_cache_fingerprint_tells_apart_the_layer_read_from_the_towers(tiny_model):
    """Same tower weights read at another hidden layer give other features, so they must not share a cache."""
    import copy

    from tinygg.train.feature_cache import tower_fingerprint

    model, _ = tiny_model
    tower = model.model.vision_tower
    other = copy.deepcopy(tower)
    other.feature_layer = -1 if tower.feature_layer != -1 else -2
    size = model.config.image_size
    assert tower_fingerprint(tower, size) == tower_fingerprint(copy.deepcopy(tower), size)
    assert tower_fingerprint(tower, size) != tower_fingerprint(other, size)


def test_feature_cache_keys_follow_the_image_contents_not_its_path(tmp_path):
    """An image rewritten in place gets a new key (no stale features); a copy elsewhere shares the entry."""
    import os
    import shutil

    import numpy as np
    from PIL import Image

    from tinygg.train.feature_cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache", "fp")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    box = [0.1, 0.2, 0.5, 0.6]
    first = cache.key(img, None), cache.key(img, box)
    assert first[0] != first[1]
    shutil.copy(img, tmp_path / "copy.png")
    assert (cache.key(tmp_path / "copy.png", None), cache.key(tmp_path / "copy.png", box)) == first
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(img)
    os.utime(img, ns=(1, 1))  # even with an old modification time, the new size/mtime pair is read anew
    assert cache.key(img, None) != first[0] and cache.key(img, box) != first[1]


def test_answer_gap_curriculum_trains_resumes_and_ends_with_the_full_template(rec_train_json, tmp_path, caplog):
    """Question-first samples: the answer first follows the image directly, a template token comes back every
    step; a run resumed from its step-4 checkpoint continues at that step's gap and the uninterrupted run's
    losses; a curriculum that would not end before max_steps is refused. (What each gap encodes:
    test_processor.py.)"""
    import logging
    import shutil

    rows = json.loads(rec_train_json.read_text())
    for r in rows:
        first = r["conversations"][0]
        assert first["value"].startswith("<image>\n")
        first["value"] = first["value"].removeprefix("<image>\n") + "\n<image>"
    qf = rec_train_json.with_name("train_qf.json")
    qf.write_text(json.dumps(rows))
    common = ["max_steps=8", "save_steps=4", "feature_cache=false"]

    def losses(out):
        return {h["step"]: h["loss"] for h in _losses(out) if "loss" in h}

    with caplog.at_level(logging.INFO, logger="tinygg.train.trainer"):
        run(_cfg(qf, tmp_path / "a", *common, "answer_gap_every=1"))
    said = [m for m in caplog.messages if m.startswith("answer-gap curriculum")]
    assert said == [f"answer-gap curriculum: step {s}, {s} of 6 template tokens" for s in range(6)] + [
        "answer-gap curriculum: step 6, the full template"]
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-4", tmp_path / "b" / "checkpoint-4")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tinygg.train.trainer"):
        run(_cfg(qf, tmp_path / "b", *common, "answer_gap_every=1"))
    assert "answer-gap curriculum: step 4, 4 of 6 template tokens" in caplog.messages
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(b) == list(range(1, 9))  # steps 1-4 from the checkpoint's history, 5-8 trained again
    assert [b[s] for s in range(5, 9)] == pytest.approx([a[s] for s in range(5, 9)], rel=1e-3)
    with pytest.raises(ValueError, match="comes back at step 6, after max_steps 5"):
        run(_cfg(qf, tmp_path / "short", "max_steps=5", "answer_gap_every=1"))
    with pytest.raises(ValueError, match="answer_gap_start 6: the template has only 6 tokens"):
        run(_cfg(qf, tmp_path / "late", "max_steps=50", "answer_gap_every=1", "answer_gap_start=6"))
