"""Attention heat maps (the paper's Figure 5): box-token selection, the patch grid -> image mapping, the
PNG."""

import numpy as np
from conftest import random_image
from PIL import Image

from tinygg.attention import answer_with_attention, box_token_indices, eager_attention, patch_heatmap
from tinygg.cli import main
from tinygg.inference import Query, generate


def test_box_tokens_are_the_ones_spelling_the_first_box(tiny_model):
    _, processor = tiny_model
    text = "The cat is at [0.125, 0.250,0.500,0.750] and a dog at [0.1,0.1,0.2,0.2]."
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    picked = box_token_indices(processor, ids)
    assert picked == list(range(picked[0], picked[-1] + 1))  # one contiguous run
    spelled = processor.decode([ids[i] for i in picked])
    assert "[0.125, 0.250,0.500,0.750]" in spelled and "dog" not in spelled and "cat" not in spelled
    no_box = processor.tokenizer("no box here", add_special_tokens=False)["input_ids"]
    assert box_token_indices(processor, no_box) == list(range(len(no_box)))


def test_heatmap_is_cropped_back_to_the_image_frame():
    # 4x4 patch grid over the padded square of an 80x40 image (side 80, image at y offset 20):
    # patch row 1 covers square y 20..40 = image y 0..20; column 3 covers x 60..80.
    weights = np.zeros(16, dtype=np.float32)
    weights[1 * 4 + 3] = 1.0
    heat = patch_heatmap(weights, 80, 40)
    assert heat.shape == (40, 80) and heat.max() == 1.0 and heat.min() == 0.0
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert y < 20 and x >= 60
    assert heat[30:, :40].max() < 0.05  # far from the hot patch: cold


def test_eager_attention_is_restored(tiny_model):
    model, _ = tiny_model
    before = model.config.text_config._attn_implementation
    with eager_attention(model):
        assert model.config.text_config._attn_implementation == "eager"
    assert model.config.text_config._attn_implementation == before


def test_attention_png_has_the_image_size(tiny_model, tmp_path):
    model, processor = tiny_model
    image = random_image(70, 45, seed=3)
    query = Query(prompt="Output the coordinate of the bright spot", images=[image])
    answer = answer_with_attention(model, processor, query, tmp_path / "att.png", max_new_tokens=5)
    assert answer == generate(model, processor, [query], max_new_tokens=5)[0]
    out = Image.open(tmp_path / "att.png")
    assert out.size == (70, 45)
    assert not np.array_equal(np.asarray(out.convert("RGB")), np.asarray(image))  # the heat map is drawn


def test_predict_cli_writes_attention(tiny_checkpoint, tmp_path):
    random_image(40, 64, seed=4).save(tmp_path / "photo.png")
    png = tmp_path / "maps" / "att.png"
    assert main(["predict", "--model", str(tiny_checkpoint), "--image", str(tmp_path / "photo.png"),
                 "--prompt", "Output the coordinate of the cat", "--attention", str(png),
                 "--max-new-tokens", "4"]) == 0
    assert Image.open(png).size == (40, 64)
