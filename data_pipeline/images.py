"""The pipeline's input: image files under a directory, their ids, and the shard a worker takes.

An image's id is its path relative to the image directory (POSIX separators). It is also the
``image`` field of the exported training samples, so the image directory is their image root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_SHARD = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count``: takes every ``count``-th image starting at ``index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"--shard i/n needs 0 <= i < n; got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        m = _SHARD.match(text.strip())
        if not m:
            raise ValueError(f"--shard must look like i/n (e.g. 0/4); got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def suffix(self) -> str:
        """File-name suffix that keeps shards' outputs apart in a shared output directory."""
        return "" if self.count == 1 else f".shard{self.index}of{self.count}"

    def take(self, items: list[str]) -> list[str]:
        return items[self.index :: self.count]


def list_images(image_dir: str | Path) -> list[str]:
    """Sorted ids (relative POSIX paths) of the image files under ``image_dir`` (recursive)."""
    root = Path(image_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--images: {root} is not a directory")
    ids = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not ids:
        raise FileNotFoundError(f"--images: no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return ids


def open_image(image_dir: str | Path, image_id: str) -> Image.Image:
    """The image as RGB, in its stored pixel orientation (as the training loader will read it)."""
    path = Path(image_dir) / image_id
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the image ({exc})") from None
