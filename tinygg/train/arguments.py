"""The HF ``TrainingArguments`` fields every stage sets the same way (SFT stages and the DiG GRPO stage):
schedule, precision, devices, checkpointing and logging, read from a stage config with these field names."""

from __future__ import annotations

from typing import Any

import torch


def on_gpu(cfg: Any) -> bool:
    return torch.cuda.is_available() and not cfg.use_cpu


def precision(cfg: Any) -> bool:
    """bf16 on: ``auto`` means wherever the GPU supports it (never on CPU)."""
    if cfg.bf16 == "auto":
        return on_gpu(cfg) and torch.cuda.is_bf16_supported()
    return bool(cfg.bf16)


def common_training_kwargs(cfg: Any) -> dict[str, Any]:
    return dict(
        output_dir=str(cfg.output_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        bf16=precision(cfg),
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        deepspeed=cfg.deepspeed,
        use_cpu=cfg.use_cpu or not torch.cuda.is_available(),
        report_to=cfg.report_to or "none",
        remove_unused_columns=False,
    )
