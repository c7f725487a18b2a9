"""Training data: several files mixed by ratio, images loaded lazily, token lengths known up front.

A mixture entry is ``{"path": FILE, "image_root": DIR, "ratio": R}``: ``R = 1`` takes every sample once,
``0.25`` a seeded quarter of them, ``2`` every sample twice. ``image_root`` defaults to the file's folder;
image paths that escape it (``../``, absolute paths elsewhere) are rejected.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..processor import TinyGGProcessor, load_image, placeholder_kinds
from .schema import Sample, read_samples

logger = logging.getLogger(__name__)


@dataclass
class DataSource:
    path: str
    image_root: str | None = None
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if not (self.ratio > 0):
            raise ValueError(f"data source {self.path}: ratio must be > 0, got {self.ratio}")

    @property
    def root(self) -> Path:
        return Path(self.image_root) if self.image_root else Path(self.path).parent


def resolve_image(root: Path, rel: str, sample: Sample) -> Path:
    """``root / rel``, refusing paths that leave ``root``."""
    root = root.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise sample.error("image", f"path {rel!r} escapes the image root {root}")
    return path


def mix(sources: Sequence[DataSource], seed: int = 0, skip_invalid: bool = False,
        rejects: list[dict] | None = None) -> list[tuple[Sample, Path]]:
    """The mixed list of ``(sample, image_root)`` pairs, deterministic for ``seed``."""
    rng = random.Random(seed)
    out: list[tuple[Sample, Path]] = []
    for src in sources:
        samples = read_samples(src.path, skip_invalid=skip_invalid, rejects=rejects)
        whole, frac = math.floor(src.ratio), src.ratio - math.floor(src.ratio)
        picked = samples * whole + rng.sample(samples, round(frac * len(samples)))
        out += [(s, src.root) for s in picked]
        logger.info("data %s: %d samples, ratio %g -> %d", src.path, len(samples), src.ratio, len(picked))
    return out


_FULL_TEMPLATE = -(2**31)  # SupervisedDataset.answer_gap: no curriculum (a gap may be negative)


class SupervisedDataset(torch.utils.data.Dataset):
    """Samples encoded on access: ``input_ids``, ``labels`` and ``pixel_values`` (or cached ``vision_features``).

    ``lengths`` (an estimate of each sample's token count, without opening images) drives length-grouped
    batching.
    """

    def __init__(self, items: list[tuple[Sample, Path]], processor: TinyGGProcessor, max_length: int = 2048,
                 feature_cache: Any = None) -> None:
        self.items = items
        self.processor = processor
        self.max_length = max_length
        self.feature_cache = feature_cache
        # the answer-gap curriculum's current gap (_FULL_TEMPLATE: none), shared with dataloader workers
        self._answer_gap = multiprocessing.Value("i", _FULL_TEMPLATE, lock=False)
        for sample, root in items:  # fail early, before any training step
            for rel in sample.images:
                resolve_image(root, rel, sample)
        self.lengths = self._estimate_lengths()

    def _estimate_lengths(self) -> list[int]:
        texts = [s.text() for s, _ in self.items]
        n_text = [len(ids) for ids in self.processor.tokenizer(texts, add_special_tokens=False)["input_ids"]] \
            if texts else []
        p = self.processor
        return [n + 12 * len(s.conversations) + len(s.images) * (p.num_image_tokens - 1)
                + len(s.objects) * (p.object_tokens - 1) for n, (s, _) in zip(n_text, self.items)]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def answer_gap(self) -> int | None:
        """Template tokens kept between an image that ends a user turn and the answer (``None``: all of them;
        see :meth:`tinygg.processor.TinyGGProcessor.encode_conversation`)."""
        return None if self._answer_gap.value == _FULL_TEMPLATE else self._answer_gap.value

    @answer_gap.setter
    def answer_gap(self, gap: int | None) -> None:
        self._answer_gap.value = _FULL_TEMPLATE if gap is None else gap

    def image_path(self, i: int, rel: str) -> Path:
        sample, root = self.items[i]
        return resolve_image(root, rel, sample)

    def kinds(self, i: int) -> list[str]:
        return placeholder_kinds(self.items[i][0].text())

    def picture_arrays(self, i: int) -> list[np.ndarray]:
        """The preprocessed pictures (pixel rows, placeholder order) of sample ``i``: each (3, S, S)."""
        sample, images = self.pictures(i)
        return self.processor.pictures_for(self.kinds(i), images, sample.objects, where=sample.source)

    def pictures(self, i: int) -> tuple[Sample, list]:
        sample, root = self.items[i]
        images = []
        for rel in sample.images:
            path = resolve_image(root, rel, sample)
            try:
                images.append(load_image(path))
            except (ValueError, FileNotFoundError) as e:
                raise sample.error("image", str(e)) from None
        return sample, images

    def __getitem__(self, i: int) -> dict[str, Any]:
        cached = self.feature_cache is not None
        if cached:  # features come from the cache: no need to open the images
            sample, images = self.items[i][0], [None] * len(self.items[i][0].images)
        else:
            sample, images = self.pictures(i)
        try:
            enc = self.processor.encode_conversation(sample.conversations, images, sample.objects,
                                                     where=sample.source, with_pixels=not cached,
                                                     answer_gap=self.answer_gap)
        except ValueError as e:
            raise sample.error("objects" if "objects" in str(e) else "conversations", str(e)) from None
        if len(enc["input_ids"]) > self.max_length:
            raise sample.error("conversations", f"{len(enc['input_ids'])} tokens exceed max_length "
                               f"{self.max_length}; raise max_length or shorten the sample")
        out = {"input_ids": torch.tensor(enc["input_ids"]), "labels": torch.tensor(enc["labels"])}
        if cached:
            paths = [self.image_path(i, rel) for rel in sample.images]
            keys = self.feature_cache.picture_keys(paths, sample.objects, enc["kinds"])
            out["vision_features"] = self.feature_cache.get(keys)
        else:
            out["pixel_values"] = torch.from_numpy(enc["pixel_values"])
        return out


@dataclass
class Collator:
    """Right-pads a batch; pictures of all samples are stacked in order (one row per placeholder)."""

    pad_token_id: int
    ignore_index: int = -100

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        n = len(features)
        ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), self.ignore_index, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        for i, f in enumerate(features):
            L = len(f["input_ids"])
            ids[i, :L], labels[i, :L], mask[i, :L] = f["input_ids"], f["labels"], 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        for key in ("pixel_values", "vision_features"):
            rows = [f[key] for f in features if key in f and len(f[key])]
            if rows:
                batch[key] = torch.cat(rows)
        return batch


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions when ``batches`` (lists of indices) are right-padded to their longest."""
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / total if total else 0.0


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int = 0,
                           mega: int = 50) -> list[list[int]]:
    """Shuffled batches of similar length: random mega-batches of ``mega * batch_size`` samples, each sorted
    by length and cut into batches; the batch order is shuffled again."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    size = mega * batch_size
    batches = []
    for start in range(0, len(order), size):
        chunk = sorted(order[start:start + size].tolist(), key=lambda i: -lengths[i])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
