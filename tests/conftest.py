"""Shared fixtures: tests never reach the network and build their own tiny models and data."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# The tiny models' matrices are too small for two OpenMP threads to help; on a busy 2-core machine they wait
# for each other (docs/demo_recipe.md: one thread was 2-5x faster per step).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_model():
    """A random tiny TinyGG model and its processor (built once per session; do not train it in place)."""
    import tinygg  # noqa: F401
    from tinygg.build import build_model

    model, processor = build_model("tiny", seed=0)
    return model.eval(), processor


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    from tinygg.build import save_checkpoint

    model, processor = tiny_model
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def photo() -> Image.Image:
    """A real photograph shipped by scikit-image (512x512 astronaut), cropped to non-square."""
    from skimage import data

    return Image.fromarray(data.astronaut()).crop((0, 64, 512, 384))


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


SQUARE_COLORS = {"red": (200, 30, 30), "blue": (30, 60, 220), "green": (30, 160, 40), "yellow": (230, 210, 40)}


def make_rec_jsonl(root, n: int = 24, seed: int = 0, bad_rows: bool = False):
    """Images with one coloured square each and a simple REC JSONL (image, expression, bbox xyxy pixels)."""
    import json
    import random
    from pathlib import Path

    from PIL import ImageDraw

    root = Path(root)
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        w, h = rng.choice([(96, 64), (64, 96), (80, 80)])
        im = Image.new("RGB", (w, h), (90, 90, 90))
        color = rng.choice(list(SQUARE_COLORS))
        s = rng.randint(12, 30)
        x, y = rng.randint(0, w - s - 1), rng.randint(0, h - s - 1)
        ImageDraw.Draw(im).rectangle([x, y, x + s, y + s], fill=SQUARE_COLORS[color])
        im.save(root / "imgs" / f"{i}.png")
        rows.append({"image": f"{i}.png", "expression": f"the {color} square", "bbox": [x, y, x + s + 1, y + s + 1]})
    if bad_rows:
        rows.append({"image": "missing.png", "expression": "x", "bbox": [0, 0, 1, 1]})
        rows.append({"image": "0.png", "expression": "y", "bbox": [50, 10, 20, 30]})
    path = root / "rec.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def rec_train_json(tmp_path_factory):
    """A converted REC training file (train.json) with images under imgs/."""
    from tinygg.data.convert import convert_jsonl
    from tinygg.data.schema import write_samples

    root = tmp_path_factory.mktemp("rec")
    src = make_rec_jsonl(root, n=24)
    write_samples(convert_jsonl(src, root / "imgs"), root / "train.json")
    return root / "train.json"
