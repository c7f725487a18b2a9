"""Loading a checkpoint and batched greedy generation (left padding, KV cache).

Used by ``tinygg predict``, the evaluations and the demo, so every answer in the project comes from the
same code path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .processor import TinyGGProcessor

logger = logging.getLogger(__name__)


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A checkpoint directory (refused if it holds only pickle weights), or a model-zoo name resolved,
    downloaded and verified by the zoo."""
    try:
        from model_zoo import resolve_model  # the zoo is optional at this layer
    except ImportError:
        if Path(name_or_path).is_dir():
            return Path(name_or_path)
        raise FileNotFoundError(f"no checkpoint directory {str(name_or_path)!r} (and the model zoo is not "
                                "installed to resolve it as a name)") from None
    return Path(resolve_model(str(name_or_path)))


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_model(name_or_path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device | None = None):
    """``(model, processor)`` from a checkpoint directory or zoo name, in eval mode.

    ``dtype`` defaults to bfloat16 on GPU and float32 on CPU.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import tinygg  # noqa: F401  (registers the Auto classes)

    path = resolve_model_path(name_or_path)
    device = torch.device(device) if device is not None else best_device()
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, use_safetensors=True).to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


@dataclass
class Query:
    """One generation request: a user prompt with its images and object boxes (pixels of images[0])."""

    prompt: str
    images: list[Image.Image] = field(default_factory=list)
    objects: list[Sequence[float]] = field(default_factory=list)


def with_image_placeholders(prompt: str, n_images: int) -> str:
    """Prepend ``<image>`` lines when the prompt does not place its images itself."""
    if "<image>" in prompt or n_images == 0:
        return prompt
    return "<image>\n" * n_images + prompt


def encode_queries(model, processor: TinyGGProcessor, queries: Sequence[Query]):
    """Model inputs of a batch of queries as chat prompts awaiting the answer (left padding), on the model's
    device and dtype."""
    device = next(model.parameters()).device
    texts = [processor.format_chat([{"from": "human", "value": with_image_placeholders(q.prompt, len(q.images))}],
                                   add_generation_prompt=True) for q in queries]
    batch = processor(text=texts, images=[q.images for q in queries], objects=[q.objects for q in queries],
                      padding_side="left").to(device)
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    return batch


@torch.no_grad()
def generate(model, processor: TinyGGProcessor, queries: Sequence[Query], max_new_tokens: int = 64,
             batch_size: int = 8, progress: bool = False, **gen_kwargs) -> list[str]:
    """Greedy answers for ``queries``, in order, batched with left padding."""
    from tqdm.auto import tqdm

    answers: list[str] = []
    steps = range(0, len(queries), batch_size)
    for start in tqdm(steps, desc="generate", disable=not progress, unit="batch"):
        batch = encode_queries(model, processor, queries[start:start + batch_size])
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, **gen_kwargs)
        new = out[:, batch["input_ids"].shape[1]:]
        answers += processor.batch_decode(new, skip_special_tokens=True)
    return [a.strip() for a in answers]
