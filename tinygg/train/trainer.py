"""Supervised training of TinyGroundingGPT (stages 1-3 and fine-tuning) on the HF Trainer with DeepSpeed.

Launch one stage on every GPU (or 2 CPU processes) through the real launcher:

    bash scripts/stage2.sh preset=tiny data=runs/synth/train.json max_steps=20

which runs ``deepspeed --module tinygg.train --config scripts/configs/stage2.yaml ...``. A single process
works too: ``tinygg train --config scripts/configs/stage2.yaml preset=tiny max_steps=20``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..data.dataset import Collator, SupervisedDataset, length_grouped_batches, mix
from .arguments import common_training_kwargs, on_gpu
from .config import TrainConfig, save_config
from .feature_cache import FeatureCache, tower_fingerprint
from .freeze import apply_freeze, merge_for_export

logger = logging.getLogger(__name__)


class GroupedBatchSampler(torch.utils.data.Sampler):
    """Indices in length-grouped batches (see :func:`length_grouped_batches`), reshuffled every epoch."""

    def __init__(self, lengths: list[int], group_size: int, seed: int) -> None:
        self.lengths, self.group_size, self.seed, self.epoch = lengths, group_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        for batch in length_grouped_batches(self.lengths, self.group_size, seed=self.seed + self.epoch):
            yield from batch


class TinyGGTrainer(Trainer):
    """The HF Trainer with length-grouped batches from precomputed length estimates."""

    def __init__(self, *args, group_by_length: bool = True, **kwargs) -> None:
        self.group_by_length = group_by_length
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_length or not hasattr(dataset, "lengths"):
            return super()._get_train_sampler(train_dataset)
        # Group per global batch, so that every rank's micro-batches hold similar lengths.
        group = self.args.per_device_train_batch_size * max(1, self.args.world_size)
        return GroupedBatchSampler(dataset.lengths, group, self.args.seed)


class LossCurveCallback(TrainerCallback):
    """Writes ``loss.png`` and ``log_history.jsonl`` into the output directory (rank 0), resumed runs included."""

    def __init__(self, output_dir: str | Path) -> None:
        self.out = Path(output_dir)

    def _write(self, state) -> None:
        if not state.is_world_process_zero:
            return
        hist = [h for h in state.log_history if "loss" in h]
        with (self.out / "log_history.jsonl").open("w") as f:
            for h in state.log_history:
                f.write(json.dumps(h) + "\n")
        if hist:
            plot_curve([h["step"] for h in hist], [h["loss"] for h in hist], self.out / "loss.png",
                       ylabel="training loss", title=self.out.name)

    def on_log(self, args, state, control, **kwargs):
        self._write(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._write(state)


class AnswerGapCallback(TrainerCallback):
    """Moves the dataset along the answer-gap curriculum (:meth:`TrainConfig.answer_gap_at`): the gap of the
    next step is set when a step ends (and at the start, for a resumed run)."""

    def __init__(self, cfg: TrainConfig, dataset: SupervisedDataset, full: int) -> None:
        self.cfg, self.dataset, self.full = cfg, dataset, full

    def _set(self, step: int) -> None:
        gap = self.cfg.answer_gap_at(step, self.full)
        if gap != self.dataset.answer_gap:
            logger.info("answer-gap curriculum: step %d, %s", step, "the full template" if gap is None else
                        f"{gap} of {self.full} template tokens" if gap >= 0 else
                        f"no template token and the answer's first {-gap} token(s) left out")
        self.dataset.answer_gap = gap

    def on_train_begin(self, args, state, control, **kwargs):
        self._set(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self._set(state.global_step)


def plot_curve(steps: list[float], values: list[float], path: Path, ylabel: str, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(steps, values, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def load_init(cfg: TrainConfig):
    """The model and processor a stage starts from."""
    if cfg.init.startswith("preset:"):
        from ..build import build_model

        return build_model(cfg.init.split(":", 1)[1], seed=cfg.seed, embed_std=cfg.init_embed_std,
                           image_token_merge=cfg.init_image_token_merge)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import tinygg  # noqa: F401

    from ..inference import resolve_model_path

    path = resolve_model_path(cfg.init)
    # fp32 master weights whatever the checkpoint holds (the shipped ones are fp16): the Trainer's bf16 / fp16
    # autocast (or DeepSpeed's) runs the half-precision compute; training half weights directly overflows
    # (a fp16 checkpoint fine-tuned at lr 1e-3 on a CPU hit NaN at step 3) and is slow on a CPU.
    return (AutoModelForImageTextToText.from_pretrained(path, use_safetensors=True, dtype=torch.float32),
            AutoProcessor.from_pretrained(path))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def run(cfg: TrainConfig) -> Path:
    """Train one stage; returns the exported checkpoint directory (``<output_dir>/final``)."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.data:
        raise ValueError("no training data: set `data:` in the YAML or pass data=FILE")
    gpu = on_gpu(cfg)
    world = world_size()
    per_step = cfg.per_device_batch_size * world
    if cfg.batch_size % per_step:
        raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of per_device_batch_size x processes "
                         f"= {cfg.per_device_batch_size} x {world}")
    args = TrainingArguments(
        **common_training_kwargs(cfg),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.batch_size // per_step,
        tf32=cfg.tf32 if gpu else None,
        dataloader_num_workers=cfg.dataloader_workers,
        disable_tqdm=False,
    )
    rank = args.process_index
    model, processor = load_init(cfg)
    attn = cfg.attn_implementation
    if attn == "auto":
        attn = "flash_attention_2" if gpu and _has_flash_attn() else "sdpa"
    model.set_attn_implementation(attn)
    model = apply_freeze(model, cfg.freeze, cfg.lora)
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()

    rejects: list[dict] = []
    items = mix(cfg.data, seed=cfg.seed, skip_invalid=cfg.skip_invalid, rejects=rejects)
    if rejects and rank == 0:
        with (out / "rejects.jsonl").open("w") as f:
            for r in rejects:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        logger.warning("%d invalid samples skipped; see %s", len(rejects), out / "rejects.jsonl")
    cache = None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if cfg.uses_feature_cache:
        cache_dir = cfg.feature_cache_dir or str(out / "feature_cache")
        cache = FeatureCache(cache_dir, tower_fingerprint(base.model.vision_tower, base.config.image_size))
    dataset = SupervisedDataset(items, processor, max_length=cfg.max_length, feature_cache=cache)
    if cache is not None:
        added = cache.fill(dataset, base.model.vision_tower, rank=rank, world=args.world_size)
        logger.info("feature cache: %d pictures computed on this rank (%s)", added, cache.dir)
    if rank == 0:
        save_config(cfg, out / "train_config.yaml")
        logger.info("%s: %d samples, %d processes, global batch %d (%d x %d x accumulation %d)", cfg.stage,
                    len(dataset), world, cfg.batch_size, cfg.per_device_batch_size, world,
                    args.gradient_accumulation_steps)

    callbacks: list[TrainerCallback] = [LossCurveCallback(out)]
    if cfg.answer_gap_every:
        full = len(processor.answer_separator())
        if cfg.answer_gap_start >= full:
            raise ValueError(f"answer_gap_start {cfg.answer_gap_start}: the template has only {full} tokens between "
                             "the image and the answer, so there is nothing to bring back")
        if cfg.answer_gap_end(full) > cfg.max_steps:
            raise ValueError(f"answer-gap curriculum: the full template ({full} tokens) comes back at step "
                             f"{cfg.answer_gap_end(full)}, after max_steps {cfg.max_steps}; lower answer_gap_every "
                             "or answer_gap_from")
        callbacks.append(AnswerGapCallback(cfg, dataset, full))
    trainer = TinyGGTrainer(model=model, args=args, train_dataset=dataset,
                            data_collator=Collator(processor.tokenizer.pad_token_id),
                            processing_class=processor, callbacks=callbacks,
                            group_by_length=cfg.group_by_length)
    last = get_last_checkpoint(str(out)) if cfg.resume and any(out.glob("checkpoint-*")) else None
    if last:
        logger.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    final = out / "final"
    if trainer.is_world_process_zero():
        export = merge_for_export(trainer.accelerator.unwrap_model(trainer.model))
        export.save_pretrained(final, safe_serialization=True)
        processor.save_pretrained(final)
        save_config(cfg, final / "train_config.yaml")
        logger.info("exported %s", final)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return final


def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True

