"""Answers of a model to DiG pairs: image A, image B and the instruction of :mod:`dig.prompt`, greedy, batched.

TinyGroundingGPT checkpoints go through :func:`tinygg.inference.generate` (the project's one generation path);
other HF image-text-to-text models (Qwen-VL, ...) through their processor's chat template and ``generate``.
Either way the prompt is the one GRPO trained on. ``tinygg eval dig --model M`` calls :func:`generate_fn`::

    tinygg eval dig --model runs/dig/3_mixed/final --pairs runs/dig/pairs/test --out runs/dig/eval
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dig.prompt import box_format_for, instruction, messages

logger = logging.getLogger(__name__)


def answer_pairs(model: Any, processor: Any, records: Sequence[Mapping[str, Any]], box_format: str,
                 batch_size: int = 8, max_new_tokens: int = 128, progress: bool = False) -> list[str]:
    """One greedy answer per pair record (``image_a``, ``image_b``), in order."""
    from tinygg.processor import TinyGGProcessor, load_image

    if isinstance(processor, TinyGGProcessor):
        from tinygg.inference import Query, generate

        queries = [Query(prompt=instruction(box_format), images=[load_image(r["image_a"]), load_image(r["image_b"])])
                   for r in records]
        return generate(model, processor, queries, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        progress=progress)
    return _answer_with_chat_template(model, processor, records, box_format, batch_size, max_new_tokens, progress)


@torch.no_grad()
def _answer_with_chat_template(model: Any, processor: Any, records: Sequence[Mapping[str, Any]], box_format: str,
                               batch_size: int, max_new_tokens: int, progress: bool) -> list[str]:
    from tqdm.auto import tqdm

    from tinygg.processor import load_image

    device = next(model.parameters()).device
    answers: list[str] = []
    for start in tqdm(range(0, len(records), batch_size), desc="generate", unit="batch", disable=not progress):
        batch = []
        for r in records[start:start + batch_size]:
            conversation = messages(box_format)
            images = iter([load_image(r["image_a"]), load_image(r["image_b"])])
            for part in conversation[0]["content"]:
                if part["type"] == "image":
                    part["image"] = next(images)
            batch.append(conversation)
        inputs = processor.apply_chat_template(batch, add_generation_prompt=True, tokenize=True, return_dict=True,
                                               return_tensors="pt", padding=True, padding_side="left").to(device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answers += processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return [a.strip() for a in answers]


def generate_fn(model: str, records: Sequence[Mapping[str, Any]], args: argparse.Namespace) -> list[str]:
    """``tinygg eval dig --model``: load ``model`` (checkpoint directory or zoo name) and answer every pair,
    asking for boxes in ``args.box_format`` (the frame the answers are then scored in)."""
    from tinygg.inference import load_model

    net, processor = load_model(model)
    box_format = args.box_format
    try:
        native = box_format_for(net.config)
    except ValueError:
        native = None
    if native is not None and native != box_format:
        logger.warning("%s writes %s boxes but --box-format is %s; the instruction asks for %s", model, native,
                       box_format, box_format)
    return answer_pairs(net, processor, records, box_format, batch_size=getattr(args, "batch_size", 8),
                        max_new_tokens=getattr(args, "max_new_tokens", 128), progress=True)
