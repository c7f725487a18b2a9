"""GroundingDINO through transformers: a tiny random checkpoint loaded like the real one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"

from data_pipeline.grounding import GroundingDetector, _phrase_spans
from data_pipeline.tiny_grounding import build_tiny_grounding_dino
from tinygg.boxes import box_iou

NAMES = [
    "cup",
    "saucer",
    "spoon",
    "table",
    "white plate",
    "coffee",
    "handle",
    "shadow",
    "napkin",
    "sugar",
    "milk",
    "foam",
    "rim",
    "light",
    "wood",
    "leaf",
    "pattern",
    "edge",
    "steam",
    "corner",
    "left side",
    "right side",
    "top",
    "bottom",
    "background",
    "glass",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_grounding_dino(
        tmp_path_factory.mktemp("gd") / "tiny", words=[w for n in NAMES for w in n.split()]
    )


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee())


def test_torchvision_is_not_needed() -> None:
    import importlib.util

    assert importlib.util.find_spec("torchvision") is None  # the project must never install it
    from transformers import AutoProcessor, GroundingDinoForObjectDetection  # noqa: F401


def test_phrase_spans() -> None:
    text, spans = _phrase_spans(["white cup", "man"])
    assert text == "white cup. man."
    assert [text[a:b] for a, b in spans] == ["white cup", "man"]


def test_detections_lie_inside_the_image_and_respect_thresholds(model_dir: Path, coffee: Image.Image) -> None:
    loose = GroundingDetector(model_dir, box_threshold=0.0, text_threshold=0.0, max_per_name=3, nms_iou=0.5)
    found = loose.detect(coffee, ["Cup", "saucer.", "spoon", "cup"])
    assert found, "with thresholds 0 every phrase owning a query gets boxes"
    assert {d.name for d in found} <= {"cup", "saucer", "spoon"}
    for d in found:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= coffee.width and 0 <= y1 < y2 <= coffee.height
    for name in {d.name for d in found}:
        same = [d.box for d in found if d.name == name]
        assert len(same) <= 3
        iou = box_iou(same, same)
        assert all(iou[i, j] <= 0.5 for i in range(len(same)) for j in range(len(same)) if i != j)
    strict = GroundingDetector(model_dir, box_threshold=0.999, text_threshold=0.0, max_per_name=3)
    kept = strict.detect(coffee, ["cup", "saucer", "spoon"])
    assert all(d.score >= 0.999 for d in kept) and len(kept) <= len(found)


def test_long_object_lists_are_split_into_prompts_that_fit(model_dir: Path, coffee: Image.Image) -> None:
    det = GroundingDetector(model_dir, box_threshold=0.0, text_threshold=0.0, max_per_name=1)
    chunks = det._chunks(NAMES)
    assert len(chunks) > 1 and [n for c in chunks for n in c] == NAMES
    for chunk in chunks:
        assert len(det.processor.tokenizer(_phrase_spans(chunk)[0])["input_ids"]) <= det.max_text_len
    found = det.detect(coffee, NAMES)
    assert found and {d.name for d in found} <= set(NAMES)


def test_bad_settings_and_missing_checkpoints_are_explained(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ValueError, match="--box-threshold must lie in"):
        GroundingDetector(model_dir, box_threshold=1.5)
    with pytest.raises(OSError, match="--grounding-model"):
        GroundingDetector(tmp_path / "nothing-here")


def test_a_hub_layout_checkpoint_loads_too(tmp_path: Path, model_dir: Path) -> None:
    """Hub repos such as IDEA-Research/grounding-dino-base ship preprocessor_config.json, not
    processor_config.json; AutoProcessor must still pick the PIL image processor (no torchvision)."""
    import json
    import shutil

    hub = tmp_path / "hub"
    shutil.copytree(model_dir, hub)
    image_processor = json.loads((hub / "processor_config.json").read_text())["image_processor"]
    (hub / "preprocessor_config.json").write_text(
        json.dumps({**image_processor, "processor_class": "GroundingDinoProcessor"})
    )
    (hub / "processor_config.json").unlink()
    det = GroundingDetector(hub)
    assert type(det.processor.image_processor).__name__ == "GroundingDinoImageProcessorPil"
