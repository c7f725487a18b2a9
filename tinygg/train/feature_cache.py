"""A disk cache of frozen-tower features, so stages that keep the towers frozen skip them entirely.

Each distinct picture (an image, or an object crop of it) is run through the dual tower once; its
``(grid*grid, C)`` features are stored as float16 ``.npy`` under a key of (tower fingerprint, image file
contents, box). The fingerprint hashes the towers' weights, the image size and the hidden layer taken from each
tower (``vision_feature_layer``): other towers, or the same towers read at another layer, never get stale
features. The image enters the key by the SHA-256 of its bytes, not its path, so an image rewritten in place gets
new features, and a corpus moved or copied elsewhere keeps its cache.

Cost: ``pictures x grid^2 x C x 2`` bytes; 2.4 MB per picture for the real towers (576 x 2048), 16 KB
for the tiny preset. Worth it for small fine-tuning sets and the CPU demo; for LLaVA-Pretrain-595k that is
1.4 TB, so turn it off there (``feature_cache=false``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


def tower_fingerprint(tower: torch.nn.Module, image_size: int) -> str:
    h = hashlib.sha1()
    h.update(str(image_size).encode())
    h.update(f"layer{tower.feature_layer}".encode())
    for name, p in sorted(tower.state_dict().items()):
        t = p.detach().float()
        h.update(f"{name}{tuple(t.shape)}{t.sum().item():.6e}{t.abs().sum().item():.6e}".encode())
    return h.hexdigest()[:16]


class FeatureCache:
    def __init__(self, directory: str | Path, fingerprint: str) -> None:
        self.dir = Path(directory) / fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self._stamps: dict[str, dict] = {}  # path -> size, mtime and sha256 of the image file (file_digest)

    def key(self, image_path: Path, box: Sequence[float] | None) -> str:
        from model_zoo.integrity import file_digest  # re-hashes a file only when its size or mtime changed

        ident = json.dumps([file_digest(Path(), str(image_path), self._stamps),
                            None if box is None else [round(float(v), 3) for v in box]])
        return hashlib.sha1(ident.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    def load(self, key: str) -> torch.Tensor:
        return torch.from_numpy(np.load(self.path(key)).astype(np.float32))

    def store(self, key: str, features: torch.Tensor) -> None:
        path = self.path(key)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, features.detach().to(torch.float16).cpu().numpy())
        tmp.replace(path)  # atomic: a killed fill never leaves a half-written entry

    def picture_keys(self, image_paths: Sequence[Path], objects: Sequence[Sequence[float]],
                     kinds: Sequence[str]) -> list[str]:
        """Cache keys of a sample's pictures in placeholder (= pixel row) order."""
        imgs, objs = iter(image_paths), iter(objects)
        return [self.key(next(imgs), None) if k == "image" else self.key(image_paths[0], next(objs)) for k in kinds]

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        missing = [k for k in keys if not self.has(k)]
        if missing:
            raise RuntimeError(f"feature cache {self.dir} lacks {len(missing)} picture(s); run fill() first")
        if not keys:
            return torch.zeros(0)
        return torch.stack([self.load(k) for k in keys])  # (n_pictures, grid*grid, C)

    @torch.no_grad()
    def fill(self, dataset, tower: torch.nn.Module, batch_size: int = 32, rank: int = 0, world: int = 1) -> int:
        """Compute the features of every picture of ``dataset`` not cached yet; returns how many were added.

        Ranks split the work; call on every rank (a barrier follows when torch.distributed is initialised).
        """
        from tqdm.auto import tqdm

        every: dict[str, tuple[int, int]] = {}  # key -> (sample index, picture index)
        for i, (sample, root) in enumerate(dataset.items):
            paths = [dataset.image_path(i, rel) for rel in sample.images]
            kinds = dataset.kinds(i)
            for j, key in enumerate(self.picture_keys(paths, sample.objects, kinds)):
                every.setdefault(key, (i, j))
        # Split the full key list (identical on every rank) before looking at what is cached: a rank that
        # checked the disk while another was writing would otherwise split a different list.
        mine = [kv for kv in sorted(every.items())[rank::world] if not self.has(kv[0])]
        mine.sort(key=lambda kv: kv[1])  # a sample's pictures side by side: its images are opened once
        opened: tuple[int, list] = (-1, [])
        device = next(tower.parameters()).device
        dtype = next(tower.parameters()).dtype
        bar = tqdm(total=len(mine), desc="feature cache", unit="pic", disable=rank != 0 or not mine)
        for start in range(0, len(mine), batch_size):
            chunk = mine[start:start + batch_size]
            rows = []
            for _, (i, j) in chunk:
                if opened[0] != i:
                    opened = (i, dataset.picture_arrays(i))
                rows.append(torch.from_numpy(opened[1][j]))
            pix = torch.stack(rows)
            feats = tower(pix.to(device, dtype))  # (b, grid*grid, C)
            for (key, _), f in zip(chunk, feats):
                self.store(key, f)
            bar.update(len(chunk))
        bar.close()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        return len(mine)
