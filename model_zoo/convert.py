"""Convert a pickle weight file to safetensors, once, without executing code from it.

``torch.load(path, weights_only=True)`` uses PyTorch's restricted unpickler, which only rebuilds
tensors and plain containers and raises on any other global (the way a malicious pickle runs code).
The tensors are then written with ``safetensors.torch.save_file``; tensors that share storage are
cloned so each is stored once under its own name.

    tinygg zoo convert DIR     # every *.bin / *.pt / *.pth / *.ckpt in DIR -> model.safetensors
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .registry import is_pickle_file

logger = logging.getLogger(__name__)


class ConversionError(ValueError):
    """A pickle file could not be converted (not a state dict, or it needs non-tensor objects)."""


def _refused(source: Path, exc: Exception) -> ConversionError:
    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return ConversionError(
        f"{source}: refused by torch's weights-only unpickler, the file needs objects other than tensors "
        f"({first[:200]}). Load it with weights_only=False only if you fully trust its author."
    )


def _state_dict(obj: Any, source: Path) -> dict[str, Any]:
    import torch

    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # Lightning-style checkpoints
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{source}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[str(key)] = value
    return out


def convert_pickle_file(source: str | Path, target: str | Path | None = None) -> Path:
    """Write the tensors of the pickle file ``source`` to ``target`` (default: ``model.safetensors``
    beside it, or ``<stem>.safetensors`` if that exists already) and return ``target``."""
    import pickle

    import torch
    from safetensors.torch import save_file

    source = Path(source)
    if not is_pickle_file(source):
        raise ConversionError(f"{source}: not a pickle weight file (*.bin, *.pt, *.pth, *.ckpt, *.pkl)")
    if target is None:
        target = source.with_name("model.safetensors")
        if target.exists():
            target = source.with_suffix(".safetensors")
    target = Path(target)
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip-format checkpoint: mmap is unsupported, retry without it
        try:
            obj = torch.load(source, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise _refused(source, exc) from exc
    except pickle.UnpicklingError as exc:
        raise _refused(source, exc) from exc
    tensors = _state_dict(obj, source)
    seen: set[int] = set()
    for key, t in list(tensors.items()):
        storage = t.untyped_storage().data_ptr()
        if storage in seen or not t.is_contiguous():  # tied or strided: give it its own memory
            tensors[key] = t.contiguous().clone()
        seen.add(storage)
    tmp = target.with_name(target.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(target)
    logger.info("converted %s -> %s (%d tensors)", source, target, len(tensors))
    return target


def convert_directory(directory: str | Path) -> list[Path]:
    """Convert every pickle weight file in ``directory`` (top level); returns the safetensors written."""
    directory = Path(directory)
    pickles = sorted(p for p in directory.iterdir() if p.is_file() and is_pickle_file(p))
    if not pickles:
        raise ConversionError(
            f"{directory}: no pickle weight files (*.bin, *.pt, *.pth, *.ckpt, *.pkl) to convert"
        )
    if len(pickles) > 1 and any(p.name.startswith("pytorch_model-") for p in pickles):
        raise ConversionError(
            f"{directory}: sharded pickle checkpoint ({len(pickles)} files); load it with transformers and "
            "call save_pretrained(dir, safe_serialization=True) instead"
        )
    targets = []
    for p in pickles:
        target = p.with_name("model.safetensors") if len(pickles) == 1 else p.with_suffix(".safetensors")
        targets.append(convert_pickle_file(p, target))
    return targets
