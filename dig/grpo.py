"""The DiG post-training stage: GRPO on image pairs, on TRL's ``GRPOTrainer``.

One stage trains a policy (a TinyGroundingGPT checkpoint or any HF image-text-to-text model, loaded by path
through the Auto classes) on one set of DiG pairs. For each prompt (image A, image B, the instruction of
:mod:`dig.prompt`), ``num_generations`` answers are sampled; the DiG reward (:mod:`dig.rewards`: format,
Hungarian-matched F1 and mean IoU, three TRL reward functions weighted by ``w_format``/``w_f1``/``w_iou``)
scores them; advantages are the group-normalised rewards; the loss is the clipped policy-gradient loss with a
k3 KL penalty to the reference policy (the stage's starting checkpoint). The curriculum
(:mod:`dig.curriculum`) chains stages.

Defaults are EasyR1's, which the DiG paper uses (REFERENCE.md section 4): 5 samples per prompt, temperature
1.0, lr 1e-6, KL coefficient 1e-2 with the k3 estimator (TRL's only estimator), clipping 0.2 low / 0.3 high,
and a token-mean loss: TRL's ``loss_type="dapo"`` averages over every completion token of the accumulated
batch, which is EasyR1's ``token-mean``. TRL's advantage is ``(r - mean_group) / (std_group + 1e-4)``.

What TRL logs per step (``<output_dir>/log_history.jsonl``, plotted to ``rewards.png``): the total
``reward``, each component ``rewards/dig_format/mean``, ``rewards/dig_f1/mean``, ``rewards/dig_iou/mean``,
``frac_reward_zero_std`` (the fraction of groups whose answers all scored the same, which give no gradient;
TRL computes it from the group standard deviations when ``scale_rewards=group``, the default here),
``kl``, ``entropy``, clip ratios, and ``dig/precision``, ``dig/recall`` from the reward itself.

Run (one stage)::

    tinygg dig train --config scripts/configs/dig_single.yaml init=checkpoints/tinygg-stage3
    bash scripts/dig.sh                       # the curriculum under DeepSpeed (2 CPU processes without GPU)

vLLM rollouts (``use_vllm=true``) are an option on GPU machines with vLLM installed, for the architectures vLLM
serves (Qwen-VL; not TinyGG, which vLLM does not know); never required: the default generates with
``model.generate`` inside the trainer.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import shutil
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import TrainerCallback

from dig.prompt import box_format_for, messages
from dig.rewards import RewardConfig, make_reward_funcs
from tinygg.train.arguments import common_training_kwargs, on_gpu

logger = logging.getLogger(__name__)

STAGE_DONE = "dig_stage.json"  # written into <output_dir>/final when a stage has finished and exported
# Tokens that stand for pictures: a sampled one would desynchronise the model's placeholder count from its
# pixel rows (TinyGG raises on a stray <object>; Qwen-VL's rope index on a stray <|vision_start|>).
PLACEHOLDER_TOKEN_FIELDS = ("image_token_id", "object_token_id", "video_token_id", "vision_start_token_id",
                            "vision_end_token_id")
REWARD_KEYS = ("reward", "rewards/dig_format/mean", "rewards/dig_f1/mean", "rewards/dig_iou/mean")
ZERO_STD_KEY = "frac_reward_zero_std"


@dataclass
class GRPOStageConfig:
    """One GRPO stage. Every field can be set in YAML or as ``key=value`` on the command line."""

    init: str = "preset:tiny"  # checkpoint dir, zoo name, or preset:NAME (a fresh TinyGG, saved to <out>/init)
    pairs: str = ""  # DiG pairs: a folder of pairs*.jsonl or one file
    output_dir: str = "runs/dig/grpo"
    box_format: str = "auto"  # auto (by model type: TinyGG norm, Qwen-VL qwen1000) | norm | qwen1000 | pixel
    # reward (dig.rewards.RewardConfig)
    w_format: float = 1.0
    w_f1: float = 1.0
    w_iou: float = 1.0
    tau: float = 0.5
    max_boxes: int = 10
    iou_mode: str = "matched"
    lambda_l1: float = 5.0
    lambda_giou: float = 2.0
    extra_rewards: list[str] = field(default_factory=list)  # "module:function" TRL reward functions
    extra_reward_weights: list[float] = field(default_factory=list)  # one per extra reward (default 1.0)
    # GRPO (EasyR1 / DiG defaults)
    num_generations: int = 5
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 128
    learning_rate: float = 1e-6
    beta: float = 1e-2  # KL coefficient (k3 estimator)
    epsilon: float = 0.2  # clip low
    epsilon_high: float = 0.3  # clip high
    loss_type: str = "dapo"  # token-mean over the accumulated batch
    scale_rewards: str = "group"  # group | batch | none
    num_iterations: int = 1  # policy updates per generation batch
    per_device_batch_size: int = 5  # completions per process per micro-step
    gradient_accumulation_steps: int = 1
    num_epochs: float = 1.0
    max_steps: int = -1
    warmup_ratio: float = 0.0
    lr_scheduler: str = "constant"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    freeze_vision: bool = True  # the vision tower(s) stay frozen; projector and LLM train
    bf16: str | bool = "auto"  # auto: on a GPU that supports it
    gradient_checkpointing: bool = False
    use_vllm: bool = False  # vLLM rollouts (GPU only)
    vllm_mode: str = "colocate"
    # adaptive curriculum: stop when the mean reward over the last stop_window logged steps reaches stop_reward
    stop_reward: float | None = None
    stop_window: int = 10
    # bookkeeping
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    resume: bool = True
    deepspeed: str | None = None
    use_cpu: bool = False
    log_completions: bool = False
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"num_generations: GRPO compares answers within a group, so it needs >= 2; "
                             f"got {self.num_generations}")
        if self.per_device_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("per_device_batch_size and gradient_accumulation_steps must be >= 1")
        if self.extra_reward_weights and len(self.extra_reward_weights) != len(self.extra_rewards):
            raise ValueError(f"extra_reward_weights: {len(self.extra_reward_weights)} weights for "
                             f"{len(self.extra_rewards)} extra_rewards")
        if self.stop_window < 1:
            raise ValueError(f"stop_window must be >= 1; got {self.stop_window}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards: expected group, batch or none; got {self.scale_rewards!r}")
        self.reward_config(self.box_format if self.box_format != "auto" else "norm")  # validates the reward fields

    def reward_config(self, box_format: str) -> RewardConfig:
        return RewardConfig(box_format=box_format, tau=self.tau, lambda_l1=self.lambda_l1,
                            lambda_giou=self.lambda_giou, max_boxes=self.max_boxes, iou_mode=self.iou_mode,
                            w_format=self.w_format, w_f1=self.w_f1, w_iou=self.w_iou)


# ---------------------------------------------------------------------------------------------- config


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """``cls(**values)`` with numbers coerced by the declared types and errors naming ``where`` and the field."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            raise ValueError(f"{where}: unknown field {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        kwargs[key] = _typed(value, hints[key], f"{where}: {key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _typed(value: Any, hint: Any, where: str) -> Any:
    """YAML 1.1 reads ``1e-6`` as a string and ``3`` as an int: convert by the declared type."""
    args = typing.get_args(hint)
    kinds = set(args) if args else {hint}
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and kinds & {float, int}:
        try:
            return float(value) if float in kinds else int(value)
        except ValueError:
            if str in kinds:
                return value
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(value, int) and float in kinds and int not in kinds:
        return float(value)
    return value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b": {"c": "x"}}`` with YAML values."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value (e.g. max_steps=20)")
        key, raw = item.split("=", 1)
        target = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = yaml.safe_load(raw) if raw != "" else ""
    return out


def load_stage_config(path: str | Path | None, overrides: Sequence[str] = ()) -> GRPOStageConfig:
    """A stage from a YAML file (without ``stages:``) plus ``key=value`` overrides."""
    values = read_yaml(path) if path else {}
    values.update(parse_overrides(overrides))
    return build_dataclass(GRPOStageConfig, values, str(path or "overrides"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of fields at the top level")
    return values


# ---------------------------------------------------------------------------------------------- data


def build_dataset(records: Sequence[dict[str, Any]], box_format: str):
    """A ``datasets.Dataset`` for GRPOTrainer: ``prompt`` (conversational), ``images`` (A, B; decoded lazily),
    and the reward's columns ``boxes`` (GT pixels) and ``image_size`` ([W, H]), plus ``id`` and ``difficulty``."""
    from datasets import Dataset, Image
    from datasets import Sequence as Seq

    from dig.evaluate import record_size

    if not records:
        raise ValueError("no DiG pairs to train on")
    prompt = messages(box_format)
    columns = {
        "id": [r["id"] for r in records],
        "difficulty": [r["difficulty"] for r in records],
        "prompt": [prompt] * len(records),
        "images": [[r["image_a"], r["image_b"]] for r in records],
        "boxes": [[[float(v) for v in box] for box in r["boxes"]] for r in records],
        "image_size": [list(record_size(r)) for r in records],
    }
    return Dataset.from_dict(columns).cast_column("images", Seq(Image()))


def load_extra_rewards(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    """TRL reward functions named ``"package.module:function"`` (a shaping reward, or a scripted one in tests)."""
    import importlib

    funcs = []
    for name in names:
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ValueError(f"extra_rewards: expected 'module:function', got {name!r}")
        fn = getattr(importlib.import_module(module), attr, None)
        if not callable(fn):
            raise ValueError(f"extra_rewards: {name!r} is not a function")
        funcs.append(fn)
    return funcs


# ---------------------------------------------------------------------------------------------- model


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def prepare_init(init: str, output_dir: Path, seed: int = 0) -> Path:
    """The checkpoint directory a stage starts from. ``preset:NAME`` builds a fresh TinyGG once and saves it to
    ``<output_dir>/init`` (every process builds the same weights; the first to finish publishes them)."""
    if not init.startswith("preset:"):
        from tinygg.inference import resolve_model_path

        return resolve_model_path(init)
    target = output_dir / "init"
    if (target / "config.json").exists():
        return target
    from tinygg.build import build_model, save_checkpoint

    model, processor = build_model(init.split(":", 1)[1], seed=seed)
    tmp = output_dir / f"init.tmp-{os.getpid()}"
    save_checkpoint(model, processor, tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_policy(path: Path):
    """``(model, processor)`` through the Auto classes (TinyGG registers itself on ``import tinygg``)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import tinygg  # noqa: F401

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def freeze_vision(model: torch.nn.Module) -> int:
    """Freeze the vision encoder (TinyGG's ``vision_tower``, Qwen-VL's ``visual``, on the model or its inner
    ``model``); returns the number of frozen parameters."""
    towers = {}
    for owner in (model, getattr(model, "model", None)):
        for name in ("vision_tower", "visual"):
            tower = getattr(owner, name, None)
            if isinstance(tower, torch.nn.Module):
                towers[id(tower)] = tower
    for tower in towers.values():
        tower.requires_grad_(False)
    frozen = sum(p.numel() for t in towers.values() for p in t.parameters())
    if not frozen:
        logger.warning("freeze_vision: %s has no vision_tower/visual module; every parameter trains",
                       type(model).__name__)
    return frozen


def reference_checkpoint(policy_dir: Path, model: torch.nn.Module, output_dir: Path) -> Path:
    """A directory TRL can rebuild the reference policy from.

    TRL 1.16 builds the reference model with ``create_model_from_path(config._name_or_path)``: it takes the
    class named in ``config.architectures`` from the ``transformers`` namespace, and for a class outside it
    (TinyGG registers itself with the Auto classes instead) reads ``config.auto_map``, which TinyGG's config
    does not define, so it fails with AttributeError. For such a model this writes ``<output_dir>/reference``:
    symlinks to the policy checkpoint's files plus a ``config.json`` naming the Auto class in ``auto_map``
    (transformers still loads the registered local class: ``trust_remote_code`` stays off). Models whose class
    is in transformers (Qwen-VL), or whose config names its Auto class in ``auto_map``, use their own directory.
    """
    import transformers

    arch = (model.config.architectures or [type(model).__name__])[0]
    if getattr(transformers, arch, None) is not None or "AutoModelForImageTextToText" in (
            getattr(model.config, "auto_map", None) or {}):
        return policy_dir
    target = output_dir / "reference"
    if not (target / "config.json").exists():
        tmp = output_dir / f"reference.tmp-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        for f in policy_dir.iterdir():
            if f.name != "config.json":
                os.symlink(os.path.relpath(f.resolve(), target), tmp / f.name)  # relative: the run dir may move
        config = json.loads((policy_dir / "config.json").read_text())
        config["auto_map"] = {"AutoModelForImageTextToText": f"{type(model).__module__}.{type(model).__name__}"}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------- callbacks


def mean_recent_reward(log_history: Sequence[dict[str, Any]], window: int) -> tuple[float | None, int]:
    """Mean of the last ``window`` logged ``reward`` values, and how many there were (None if fewer)."""
    rewards = [h["reward"] for h in log_history if "reward" in h]
    if len(rewards) < window:
        return None, len(rewards)
    recent = rewards[-window:]
    return sum(recent) / window, window


class AdaptiveStopCallback(TrainerCallback):
    """Ends the stage when the mean reward over the last ``window`` logged steps reaches ``threshold``.

    The logged reward is gathered over all processes, so every rank takes the same decision.
    """

    def __init__(self, threshold: float, window: int) -> None:
        self.threshold, self.window = threshold, window
        self.stopped_at: int | None = None
        self.mean: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "reward" not in logs:
            return control
        mean, _ = mean_recent_reward(state.log_history, self.window)
        if mean is not None and mean >= self.threshold:
            self.mean, self.stopped_at = mean, state.global_step
            logger.info("adaptive curriculum: mean reward %.4f over the last %d steps >= %.4f at step %d; "
                        "moving on", mean, self.window, self.threshold, state.global_step)
            control.should_training_stop = True
        return control


class RewardCurveCallback(TrainerCallback):
    """Writes ``log_history.jsonl`` at every log and ``rewards.png`` (reward, its components, zero-variance
    groups) at every checkpoint and at the end (rank 0)."""

    def __init__(self, output_dir: Path, title: str) -> None:
        self.out, self.title = output_dir, title

    def _write(self, state, plot: bool) -> None:
        if not state.is_world_process_zero:
            return
        with (self.out / "log_history.jsonl").open("w") as fh:
            for h in state.log_history:
                fh.write(json.dumps(h) + "\n")
        if plot:
            from dig.curriculum import plot_reward_curves

            plot_reward_curves([(self.title, state.log_history)], self.out / "rewards.png")

    def on_log(self, args, state, control, **kwargs):
        self._write(state, plot=False)

    def on_save(self, args, state, control, **kwargs):
        self._write(state, plot=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._write(state, plot=True)


# ---------------------------------------------------------------------------------------------- the stage


def stage_done(output_dir: str | Path) -> dict[str, Any] | None:
    """The record of a finished stage (``<output_dir>/final/dig_stage.json``), or None."""
    marker = Path(output_dir) / "final" / STAGE_DONE
    return json.loads(marker.read_text()) if marker.exists() else None


def placeholder_token_ids(config: Any) -> list[int]:
    """The ids of ``config``'s picture placeholder tokens (never to be sampled)."""
    ids = [getattr(config, name, None) for name in PLACEHOLDER_TOKEN_FIELDS]
    return sorted({int(i) for i in ids if isinstance(i, int) and i >= 0})


def grpo_args(cfg: GRPOStageConfig, reward_weights: list[float], suppress_tokens: Sequence[int] = ()):
    """The ``trl.GRPOConfig`` of a stage; ``suppress_tokens`` are never sampled (``model.generate`` rollouts)."""
    from trl import GRPOConfig

    if cfg.use_vllm and not on_gpu(cfg):
        raise ValueError("use_vllm=true needs a GPU (and vLLM installed); set use_vllm=false on CPU")
    return GRPOConfig(
        **common_training_kwargs(cfg),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        num_iterations=cfg.num_iterations,
        reward_weights=reward_weights,
        use_vllm=cfg.use_vllm,
        vllm_mode=cfg.vllm_mode,
        log_completions=cfg.log_completions,
        generation_kwargs={"suppress_tokens": list(suppress_tokens)} if suppress_tokens and not cfg.use_vllm
        else None,
        disable_tqdm=rank() != 0,
    )


def run_stage(cfg: GRPOStageConfig, name: str = "grpo", processor: Any = None) -> Path:
    """Train one GRPO stage; returns its exported checkpoint ``<output_dir>/final``.

    A finished stage (its ``final/dig_stage.json`` exists) is not run again when ``cfg.resume``; a killed one
    resumes from its last ``checkpoint-*``. ``processor`` replaces the checkpoint's own processor (for a
    processor the Auto classes cannot build here, e.g. Qwen2-VL's without torchvision).
    """
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOTrainer

    from dig.pairs import read_pairs

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.resume and stage_done(out):
        if rank() == 0:
            logger.info("%s: already finished (%s); skipped", name, out / "final")
        return out / "final"
    if not cfg.pairs:
        raise ValueError(f"{name}: no DiG pairs: set pairs=DIR (make them with `tinygg dig generate`)")
    init = prepare_init(cfg.init, out, cfg.seed)
    model, own_processor = load_policy(init)
    processor = processor or own_processor
    box_format = box_format_for(model.config, cfg.box_format)
    reward_funcs, weights = make_reward_funcs(cfg.reward_config(box_format))
    extra = load_extra_rewards(cfg.extra_rewards)
    reward_funcs += extra
    weights += list(cfg.extra_reward_weights) or [1.0] * len(extra)
    if cfg.freeze_vision:
        freeze_vision(model)
    if cfg.beta:
        model.config._name_or_path = str(reference_checkpoint(init, model, out))
    records = read_pairs(cfg.pairs)
    dataset = build_dataset(records, box_format)
    args = grpo_args(cfg, weights, suppress_tokens=placeholder_token_ids(model.config))
    if rank() == 0:
        (out / "stage_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        logger.info("%s: %d pairs from %s, init %s, box format %s, %d generations per prompt, %d prompts per "
                    "step", name, len(records), cfg.pairs, init, box_format, cfg.num_generations,
                    args.generation_batch_size // cfg.num_generations)
    callbacks: list[TrainerCallback] = [RewardCurveCallback(out, name)]
    stopper = None
    if cfg.stop_reward is not None:
        stopper = AdaptiveStopCallback(cfg.stop_reward, cfg.stop_window)
        callbacks.append(stopper)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=processor, callbacks=callbacks)
    last = get_last_checkpoint(str(out)) if cfg.resume and any(out.glob("checkpoint-*")) else None
    if last:
        logger.info("%s: resuming from %s", name, last)
    trainer.train(resume_from_checkpoint=last)

    final = out / "final"
    history = trainer.state.log_history
    trainer.save_model(str(final))  # every rank takes part (ZeRO-3 gathers the weights); rank 0 writes
    if trainer.is_world_process_zero():
        processor.save_pretrained(final)
        mean, _ = mean_recent_reward(history, cfg.stop_window)
        record = {"name": name, "steps": trainer.state.global_step, "pairs": str(cfg.pairs), "init": str(init),
                  "box_format": box_format, "stopped_early": bool(stopper and stopper.stopped_at is not None),
                  "stop_reward": cfg.stop_reward, "mean_reward_last_window": mean,
                  "rewards": [h["reward"] for h in history if "reward" in h]}
        (final / STAGE_DONE).write_text(json.dumps(record, indent=2) + "\n")
        logger.info("%s: exported %s after %d steps", name, final, trainer.state.global_step)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return final
