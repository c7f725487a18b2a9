"""DiG GRPO stage and curriculum on the tiny TinyGG preset with flat-rendered pairs (CPU).

A random tiny model never writes a well-formed box list, so every DiG reward is 0 and no group has variance:
the tests that need a gradient add a scripted reward (a hash of the answer text: answers that differ score
apart) through ``extra_rewards``; the DiG components are still computed and logged.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "scripts" / "configs").glob("dig*.yaml"))

SCRIPTED_REWARD = textwrap.dedent("""
    from dig.rewards import completion_text

    def text_hash(prompts=None, completions=(), **columns):
        return [sum(map(ord, completion_text(c))) % 97 / 97 for c in completions]
""")

# the smallest useful run: 2 prompts x 2 answers of 6 tokens per step
FAST = ["per_device_batch_size=4", "gradient_accumulation_steps=1", "num_generations=2", "max_completion_length=6", "learning_rate=1e-2",
        "extra_rewards=[dig_test_reward:text_hash]", "save_steps=1", "logging_steps=1"]


@pytest.fixture(scope="module")
def pairs_root(tmp_path_factory) -> Path:
    from dig.pairs import PairConfig, generate_pairs

    root = tmp_path_factory.mktemp("dig_pairs")
    generate_pairs(PairConfig(out=root, n=2, difficulty="curriculum", size=(64, 48)), progress=False)
    return root


@pytest.fixture
def scripted_reward(tmp_path, monkeypatch) -> Path:
    (tmp_path / "dig_test_reward.py").write_text(SCRIPTED_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> int:
    return sum(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    from dig.curriculum import load_curriculum

    cur = load_curriculum(path)
    assert [s.name for s in cur.stages] == ["single", "dual", "mixed"]
    first = cur.stages[0].config
    assert (first.num_generations, first.temperature, first.learning_rate, first.beta, first.epsilon,
            first.epsilon_high, first.loss_type) == (5, 1.0, 1e-6, 1e-2, 0.2, 0.3, "dapo")
    assert first.pairs.endswith("single") and cur.stages[2].config.output_dir.endswith("3_mixed")


def test_override_precedence_and_errors(tmp_path):
    from dig.curriculum import load_curriculum

    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("max_steps: 9\nmode: adaptive\nstages:\n  - {name: a, pairs: pa, max_steps: 4, "
                         "stop_reward: 1.5}\n  - {name: b, pairs: /abs/pb}\n")
    cur = load_curriculum(yaml_path, ["pairs_root=R", "stages.b.max_steps=7", "beta=0", "init=ckpt"])
    a, b = (s.config for s in cur.stages)
    assert (a.max_steps, b.max_steps) == (4, 7)  # stage entry beats the top level; stages.<name>. beats both
    assert (a.pairs, b.pairs) == (str(Path("R") / "pa"), "/abs/pb")
    assert (a.stop_reward, b.stop_reward) == (1.5, None) and a.beta == b.beta == 0.0
    assert a.init == "ckpt"
    assert load_curriculum(yaml_path, ["mode=fixed"]).stages[0].config.stop_reward is None
    cur = load_curriculum(yaml_path, ["max_steps=2"])  # a plain override applies to every stage
    assert [s.config.max_steps for s in cur.stages] == [2, 2]
    one = load_curriculum(ROOT / "scripts" / "configs" / "demo" / "dig.yaml", [f"output_dir={tmp_path / 'one'}"])
    assert [s.name for s in one.stages] == ["grpo"] and one.stages[0].config.output_dir == str(tmp_path / "one")
    with pytest.raises(ValueError, match="did you mean 'learning_rate'"):
        load_curriculum(yaml_path, ["learning_rat=1"])
    with pytest.raises(ValueError, match="stages.c: no such stage"):
        load_curriculum(yaml_path, ["stages.c.max_steps=1"])
    with pytest.raises(ValueError, match="num_generations"):
        load_curriculum(yaml_path, ["num_generations=1"])
    with pytest.raises(ValueError, match="box_format"):
        load_curriculum(yaml_path, ["box_format=grid"])


def test_grpo_arguments_carry_the_dig_defaults():
    from dig.grpo import GRPOStageConfig, grpo_args

    cfg = GRPOStageConfig(per_device_batch_size=5, gradient_accumulation_steps=2)
    args = grpo_args(cfg, [1.0, 1.0, 1.0])
    assert (args.num_generations, args.temperature, args.learning_rate, args.beta, args.epsilon,
            args.epsilon_high, args.loss_type, args.reward_weights) == (5, 1.0, 1e-6, 1e-2, 0.2, 0.3, "dapo",
                                                                         [1.0, 1.0, 1.0])
    assert args.generation_batch_size == 10  # 2 prompts x 5 answers per step on one process
    assert args.generation_kwargs is None
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use_vllm=true needs a GPU"):
            grpo_args(GRPOStageConfig(use_vllm=True), [1.0])


def test_cli_registers_dig_train(capsys):
    from dig.grpo_cli import cmd_train
    from tinygg.cli import build_parser

    args = build_parser().parse_args(["dig", "train", "--config", str(CONFIGS[0]), "max_steps=3"])
    assert args.func is cmd_train and args.overrides == ["max_steps=3"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dig", "train", "--help"])
    assert "stages.dual.max_steps=50" in capsys.readouterr().out


def test_placeholder_tokens_are_never_sampled(tiny_model):
    """A sampled <object> would break the log-prob forward (placeholder count vs pixel rows)."""
    from dig.grpo import GRPOStageConfig, grpo_args, placeholder_token_ids

    model, _ = tiny_model
    ids = placeholder_token_ids(model.config)
    assert ids == sorted([model.config.image_token_id, model.config.object_token_id])
    assert grpo_args(GRPOStageConfig(), [1.0], suppress_tokens=ids).generation_kwargs == {"suppress_tokens": ids}


def test_reference_policy_reloads_the_way_trl_builds_it(tiny_checkpoint, tmp_path):
    """beta > 0: TRL rebuilds the reference from config._name_or_path; TinyGG's class is not in transformers,
    so its config names the Auto class (auto_map) and the checkpoint directory itself serves."""
    from trl.trainer.utils import create_model_from_path

    from dig.grpo import load_policy, reference_checkpoint

    model, _ = load_policy(tiny_checkpoint)
    ref_dir = reference_checkpoint(tiny_checkpoint, model, tmp_path)
    assert ref_dir == tiny_checkpoint
    ref = create_model_from_path(str(ref_dir), dtype=torch.float32)
    assert type(ref) is type(model)
    theirs = ref.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())


def test_prompt_is_the_inference_prompt(tiny_model):
    """GRPO's prompt (TRL -> processor.apply_chat_template) is token for token what tinygg.inference asks."""
    from dig.prompt import instruction, messages
    from tinygg.inference import with_image_placeholders

    _, processor = tiny_model
    via_trl = processor.apply_chat_template(messages("norm"), add_generation_prompt=True, tokenize=False)
    via_inference = processor.format_chat(
        [{"from": "human", "value": with_image_placeholders(instruction("norm"), 2)}], add_generation_prompt=True)
    assert via_trl == via_inference
    assert via_trl.count("<image>") == 2 and "Output the bounding boxes of all differences" in via_trl


def test_box_format_follows_the_model():
    from types import SimpleNamespace

    from dig.prompt import box_format_for, instruction

    assert box_format_for(SimpleNamespace(model_type="tinygg")) == "norm"
    assert box_format_for(SimpleNamespace(model_type="qwen2_5_vl")) == "qwen1000"
    assert box_format_for(SimpleNamespace(model_type="llava"), "pixel") == "pixel"
    with pytest.raises(ValueError, match="set box_format"):
        box_format_for(SimpleNamespace(model_type="llava"))
    assert "1000" in instruction("qwen1000") and "padded to a square" in instruction("norm")


def test_adaptive_stop_callback_uses_the_window():
    from transformers import TrainerControl, TrainerState

    from dig.grpo import AdaptiveStopCallback

    cb = AdaptiveStopCallback(threshold=1.0, window=3)
    state, control = TrainerState(), TrainerControl()
    for step, reward in enumerate([0.2, 1.5, 1.4, 0.5, 1.2, 1.3], 1):
        state.global_step = step
        state.log_history.append({"reward": reward, "step": step})
        cb.on_log(None, state, control, logs={"reward": reward})
        if control.should_training_stop:
            break
    # windows: (0.2,1.5,1.4)=1.03 passes at step 3
    assert cb.stopped_at == 3 and cb.mean == pytest.approx((0.2 + 1.5 + 1.4) / 3)
    cb2, control2, state2 = AdaptiveStopCallback(threshold=1.0, window=3), TrainerControl(), TrainerState()
    for step, reward in enumerate([0.2, 0.1, 1.4, 0.5], 1):
        state2.log_history.append({"reward": reward, "step": step})
        cb2.on_log(None, state2, control2, logs={"reward": reward})
    assert not control2.should_training_stop and cb2.stopped_at is None


def test_dataset_columns(pairs_root):
    from dig.grpo import build_dataset
    from dig.pairs import read_pairs

    records = read_pairs(pairs_root / "dual")
    ds = build_dataset(records, "norm")
    row = ds[0]
    assert [im.size for im in row["images"]] == [(64, 48), (64, 48)]
    assert row["boxes"] == [[float(v) for v in b] for b in records[0]["boxes"]] and len(row["boxes"]) == 2
    assert row["image_size"] == [64, 48] and row["prompt"][0]["role"] == "user"


# ---------------------------------------------------------------------------------------------- training


def test_curriculum_trains_each_stage_and_skips_finished_ones(pairs_root, scripted_reward, tmp_path):
    from dig.curriculum import load_curriculum, run_curriculum

    out = tmp_path / "run"
    args = [f"pairs_root={pairs_root}", f"output_dir={out}", "max_steps=1", *FAST]
    final = run_curriculum(load_curriculum(ROOT / "scripts" / "configs" / "dig.yaml", args))
    assert final == out / "3_mixed" / "final"
    init = _weights(out / "1_single" / "init")
    previous = init
    for k, name in enumerate(["single", "dual", "mixed"], 1):
        stage = out / f"{k}_{name}"
        done = json.loads((stage / "final" / "dig_stage.json").read_text())
        assert done["steps"] == 1 and done["box_format"] == "norm"
        assert done["init"] == (str(out / "1_single" / "init") if k == 1 else str(out / f"{k - 1}_"
                                                                                     f"{['single', 'dual'][k - 2]}" / "final"))
        weights = _weights(stage / "final")
        assert _changed(previous, weights, "model.language_model.") > 0  # the policy moved
        assert _changed(previous, weights, "model.vision_tower.") == 0  # the towers stay frozen
        previous = weights
        hist = [json.loads(x) for x in (stage / "log_history.jsonl").read_text().splitlines()]
        logged = next(h for h in hist if "reward" in h)
        for key in ("rewards/dig_format/mean", "rewards/dig_f1/mean", "rewards/dig_iou/mean", "kl",
                    "frac_reward_zero_std", "dig/recall"):
            assert key in logged
        assert 0.0 <= logged["frac_reward_zero_std"] <= 1.0
        assert (stage / "rewards.png").stat().st_size > 0
    summary = json.loads((out / "curriculum.json").read_text())
    assert [s["skipped"] for s in summary["stages"]] == [False, False, False]
    assert (out / "curriculum_rewards.png").stat().st_size > 0

    # a restart skips every finished stage and trains nothing
    stamp = (out / "3_mixed" / "final" / "model.safetensors").stat().st_mtime_ns
    run_curriculum(load_curriculum(ROOT / "scripts" / "configs" / "dig.yaml", args))
    assert [s["skipped"] for s in json.loads((out / "curriculum.json").read_text())["stages"]] == [True] * 3
    assert (out / "3_mixed" / "final" / "model.safetensors").stat().st_mtime_ns == stamp


def test_adaptive_mode_moves_on_when_the_reward_passes(pairs_root, scripted_reward, tmp_path):
    from dig.curriculum import load_curriculum, run_curriculum

    out = tmp_path / "adaptive"
    yaml_path = tmp_path / "a.yaml"
    yaml_path.write_text("mode: adaptive\nstop_window: 1\nstages:\n  - {name: single, pairs: single, stop_reward: 0.0}"
                         "\n  - {name: dual, pairs: dual, stop_reward: 0.0}\n")
    run_curriculum(load_curriculum(yaml_path, [f"pairs_root={pairs_root}", f"output_dir={out}", "max_steps=4",
                                               "beta=0", *FAST]))
    for k, name in enumerate(["single", "dual"], 1):
        done = json.loads((out / f"{k}_{name}" / "final" / "dig_stage.json").read_text())
        assert done["stopped_early"] and done["steps"] == 1  # of max_steps=4: threshold 0 passes at once
        assert done["mean_reward_last_window"] >= 0.0


@pytest.mark.slow
def test_killed_stage_resumes_from_its_checkpoint(pairs_root, scripted_reward, tmp_path):
    import shutil

    from dig.grpo import load_stage_config, run_stage

    out = tmp_path / "stage"
    base = [f"pairs={pairs_root / 'single'}", f"output_dir={out}", *FAST]
    run_stage(load_stage_config(None, [*base, "max_steps=1"]))
    shutil.rmtree(out / "final")  # as if killed after checkpoint-1 was written
    run_stage(load_stage_config(None, [*base, "max_steps=2"]))
    hist = [json.loads(x) for x in (out / "log_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist if "reward" in h] == [1, 2]  # step 1 came from the checkpoint's state
    assert json.loads((out / "final" / "dig_stage.json").read_text())["steps"] == 2


@pytest.mark.slow
@pytest.mark.deepspeed
def test_dig_script_under_deepspeed_two_processes(pairs_root, tmp_path):
    (tmp_path / "dig_test_reward.py").write_text(SCRIPTED_REWARD)
    out = tmp_path / "ds"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]),
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR",
                                                   str(Path.home() / ".cache" / "torch_extensions")))
    cmd = ["bash", str(ROOT / "scripts" / "dig.sh"), f"pairs_root={pairs_root}", f"output_dir={out}",
           "max_steps=2", *[a.replace("per_device_batch_size=4", "per_device_batch_size=2") for a in FAST]]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "num_local_procs=2" in log and log.count("done: ") == 2
    init = _weights(out / "1_single" / "init")
    final = _weights(out / "3_mixed" / "final")
    assert _changed(init, final, "model.language_model.") > 0
    for k, name in enumerate(["single", "dual", "mixed"], 1):
        assert json.loads((out / f"{k}_{name}" / "final" / "dig_stage.json").read_text())["steps"] == 2
    assert len(list((out / "1_single" / "checkpoint-2").rglob("*optim_states.pt"))) == 2  # ZeRO-2 partitions
    # restarting the script skips the three finished stages
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (proc.stdout + proc.stderr).count("already finished") >= 3


# ---------------------------------------------------------------------------------------------- evaluation


def test_eval_dig_with_a_model_generates_then_scores(tiny_checkpoint, pairs_root, tmp_path, capsys):
    """`tinygg eval dig --model`: the GRPO prompt through tinygg.inference, batched, then the DiG scorer."""
    from dig.pairs import read_pairs
    from dig.predict import answer_pairs
    from tinygg.cli import build_parser
    from tinygg.inference import load_model

    out = tmp_path / "eval"
    args = build_parser().parse_args(["eval", "dig", "--model", str(tiny_checkpoint), "--pairs",
                                      str(pairs_root / "mixed"), "--out", str(out), "--batch-size", "2",
                                      "--max-new-tokens", "5", "--vis", "1"])
    assert args.func(args) == 0
    assert "total" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 2 and metrics["overall"]["n_gt"] >= 2
    rows = [json.loads(x) for x in (out / "per_sample.jsonl").read_text().splitlines()]
    model, processor = load_model(tiny_checkpoint)
    alone = answer_pairs(model, processor, read_pairs(pairs_root / "mixed"), "norm", batch_size=1, max_new_tokens=5)
    assert [r["text"] for r in rows] == alone  # the batched answers are each pair's own greedy answer
    assert len(list((out / "vis").glob("*.png"))) == 1
