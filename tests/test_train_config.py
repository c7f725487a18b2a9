"""Stage configs: every shipped YAML loads, overrides, errors that name the field."""

from pathlib import Path

import pytest

from tinygg.train.config import load_config

CONFIG_DIR = Path(__file__).parents[1] / "scripts" / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))
SFT = CONFIG_DIR / "stage2.yaml"


def _is_dig(path: Path) -> bool:
    """DiG GRPO configs (a curriculum) are named dig*.yaml or live in a dig/ folder; a supervised config there
    (the DiG stage's warm start, dig_sft.yaml) names its trainer ``stage``."""
    named = path.name.startswith("dig") or path.parent.name == "dig"
    return named and not any(line.startswith("stage:") for line in path.read_text().splitlines())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_yaml_loads_and_says_how_to_launch(path):
    head = path.read_text().splitlines()[:8]
    comments = [line for line in head if line.startswith("#")]
    assert any("Launch:" in line for line in comments), path.name
    assert any("bash scripts/" in line or "tinygg " in line for line in comments), path.name
    if _is_dig(path):
        from dig.curriculum import load_curriculum

        assert load_curriculum(path) is not None
        return
    cfg = load_config(path)
    assert cfg.stage and cfg.output_dir and isinstance(cfg.learning_rate, float)


def test_paper_table6_hyper_parameters():
    d = Path(__file__).parents[1] / "scripts" / "configs"
    p1, p2 = load_config(d / "stage1_pretrain.yaml"), load_config(d / "stage1_finetune.yaml")
    s2, s3 = load_config(d / "stage2.yaml"), load_config(d / "stage3.yaml")
    assert (p1.batch_size, p1.learning_rate, p1.freeze.llm, p1.freeze.projector) == (32, 1e-3, "frozen", "full")
    assert (p2.batch_size, p2.learning_rate, p2.freeze.llm) == (32, 2e-5, "full")
    assert (s2.batch_size, s2.learning_rate, s2.num_epochs) == (32, 2e-5, 1)
    assert (s3.batch_size, s3.learning_rate, s3.num_epochs) == (16, 2e-5, 2)
    for c in (p1, p2, s2, s3):
        assert c.lr_scheduler == "cosine" and c.warmup_ratio == 0.03 and c.weight_decay == 0
        assert c.freeze.vision == "frozen"


def test_overrides_and_shortcuts(tmp_path):
    cfg = load_config(SFT, ["preset=tiny", "data=a.json,b.json", "image_root=imgs", "max_steps=20",
                                   "freeze.llm=lora", "lora.r=8", "learning_rate=1e-3", "init_embed_std=0.2"])
    assert cfg.init == "preset:tiny" and cfg.max_steps == 20 and cfg.learning_rate == 1e-3
    assert [d.path for d in cfg.data] == ["a.json", "b.json"] and cfg.data[0].image_root == "imgs"
    assert cfg.freeze.llm == "lora" and cfg.lora.r == 8 and cfg.init_embed_std == 0.2


@pytest.mark.parametrize("override,msg", [
    ("learnig_rate=1", "unknown field 'learnig_rate' .*did you mean 'learning_rate'"),
    ("freeze.llm=half", "freeze.llm: expected one of frozen, full, lora"),
    ("freeze.vision=lora", "freeze.vision: expected one of frozen, full"),
    ("max_steps", "expected key=value"),
    ("batch_size=30", "multiple of per_device_batch_size"),
    ("learning_rate=fast", "expected a number"),
])
def test_bad_overrides_name_the_field(override, msg):
    with pytest.raises(ValueError, match=msg):
        load_config(None, [override])


def test_fresh_model_settings_need_a_fresh_model():
    with pytest.raises(ValueError, match="init_embed_std applies to a fresh model"):
        load_config(None, ["init=runs/stage1/final", "init_embed_std=0.2"])
    with pytest.raises(ValueError, match="init_image_token_merge applies to a fresh model"):
        load_config(None, ["init=runs/stage1/final", "init_image_token_merge=2"])
    assert load_config(None, ["preset=tiny", "init_image_token_merge=2"]).init_image_token_merge == 2


def test_init_embed_std_reaches_the_fresh_model():
    from tinygg.train.trainer import load_init

    model, _ = load_init(load_config(None, ["preset=tiny", "init_embed_std=0.2"]))
    assert abs(float(model.get_input_embeddings().weight.std()) - 0.2) < 0.01


def test_answer_gap_schedule_and_its_checks():
    cfg = load_config(None, ["max_steps=100", "answer_gap_every=10", "answer_gap_from=40"])
    assert [cfg.answer_gap_at(s, full=6) for s in (0, 39, 40, 49, 50, 89, 90, 99)] == [0, 0, 1, 1, 2, 5, None, None]
    assert cfg.answer_gap_end(6) == 90
    no_from = load_config(None, ["max_steps=100", "answer_gap_every=10"])
    assert [no_from.answer_gap_at(s, full=3) for s in (0, 9, 10, 20, 30)] == [0, 0, 1, 2, None]
    assert load_config(None, ["max_steps=100"]).answer_gap_at(0, full=6) is None  # off
    early = load_config(None, ["max_steps=100", "answer_gap_every=10", "answer_gap_start=-2"])
    assert [early.answer_gap_at(s, full=2) for s in (0, 9, 10, 20, 30, 40)] == [-2, -2, -1, 0, 1, None]
    assert early.answer_gap_end(2) == 40
    with pytest.raises(ValueError, match="answer_gap_every needs max_steps"):
        load_config(None, ["answer_gap_every=10"])
    with pytest.raises(ValueError, match="must be >= 0"):
        load_config(None, ["max_steps=100", "answer_gap_every=-1"])
