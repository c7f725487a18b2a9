"""Shared fixtures: tests never reach the network and build their own tiny models and data."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


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
