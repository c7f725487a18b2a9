"""The processor: pictures, token expansion, chat format, label masks, bad input."""

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from tinygg.processor import IGNORE_INDEX, PAD_COLOR, load_image


def test_pad_to_square_centres_with_clip_mean(tiny_model):
    _, processor = tiny_model
    img = Image.new("RGB", (100, 40), (255, 0, 0))
    sq = processor.pad_to_square(img)
    assert sq.size == (100, 100)
    assert sq.getpixel((50, 10)) == PAD_COLOR and sq.getpixel((50, 50)) == (255, 0, 0)
    assert sq.getpixel((50, 29)) == PAD_COLOR and sq.getpixel((50, 30)) == (255, 0, 0)  # offset (100-40)//2
    arr = processor.preprocess_image(img)
    assert arr.shape == (3, processor.image_size, processor.image_size) and arr.dtype == np.float32


def test_labels_cover_exactly_the_assistant_turns(tiny_model):
    _, processor = tiny_model
    tok = processor.tokenizer
    turns = [{"from": "human", "value": "<image>\nOutput the coordinate of the cube."},
             {"from": "gpt", "value": "[0.100,0.200,0.300,0.400]"},
             {"from": "human", "value": "And the sphere?"},
             {"from": "gpt", "value": "[0.5,0.5,0.6,0.6]"}]
    enc = processor.encode_conversation(turns, images=[random_image(30, 20)])
    ids, labels = enc["input_ids"], enc["labels"]
    assert len(ids) == len(labels)
    learned = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert learned == "[0.100,0.200,0.300,0.400]<|im_end|>[0.5,0.5,0.6,0.6]<|im_end|>"
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert enc["pixel_values"].shape[0] == 1
    # the same text as the chat formatter and the jinja chat template
    expected = processor.format_chat(turns).replace("<image>", "<image>" * processor.num_image_tokens)
    assert text == expected
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    assert processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
        processor.format_chat([{"from": "human", "value": "<image>\nHi"}], add_generation_prompt=True)


def test_object_count_mismatch(tiny_model):
    _, processor = tiny_model
    with pytest.raises(ValueError, match="1 <object> placeholder.*but 2 object box"):
        processor(text=["<image> <object>"], images=[random_image(20, 20)], objects=[[[0, 0, 5, 5], [1, 1, 4, 4]]])
    with pytest.raises(ValueError, match="2 <object> placeholder.*but 0 object box"):
        processor(text=["<image> <object><object>"], images=[random_image(20, 20)])
    with pytest.raises(ValueError, match="1 <image> placeholder.*but 0 image"):
        processor(text=["<image> hi"])


def test_bad_object_boxes(tiny_model):
    _, processor = tiny_model
    with pytest.raises(ValueError, match=r"objects\[0\].*outside the 20x10 image"):
        processor(text=["<image><object>"], images=[random_image(20, 10)], objects=[[[0, 0, 25, 5]]])
    with pytest.raises(ValueError, match="inverted"):
        processor(text=["<image><object>"], images=[random_image(20, 10)], objects=[[[10, 0, 5, 5]]])


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="notes.png: not a readable image"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")


def test_real_photo_object_crop(tiny_model, photo):
    _, processor = tiny_model
    batch = processor(text=["<image>\n<object>"], images=[photo], objects=[[[150, 0, 350, 200]]])
    assert batch["pixel_values"].shape == (2, 3, processor.image_size, processor.image_size)
    # the crop differs from the whole image
    assert not np.allclose(batch["pixel_values"][0].numpy(), batch["pixel_values"][1].numpy())


def test_sample_images_from_scikit_image():
    img = load_image("sample:coffee")
    assert img.size == (600, 400) and img.mode == "RGB"
    with pytest.raises(ValueError, match="no sample image 'nope'"):
        load_image("sample:nope")


def test_answer_gap_joins_an_image_ending_turn_to_its_answer(tiny_model):
    """The answer-gap curriculum keeps the first k template tokens between a question-first image and the answer;
    the full count is the plain template, and turns that do not end with the image keep theirs."""
    _, processor = tiny_model
    tok = processor.tokenizer
    turns = [{"from": "human", "value": "Output the coordinate of the cube.\n<image>"},
             {"from": "gpt", "value": "[0.100,0.200,0.300,0.400]"},
             {"from": "human", "value": "And the sphere?"},
             {"from": "gpt", "value": "[0.5,0.5,0.6,0.6]"}]
    image = [random_image(30, 20)]
    full = processor.encode_conversation(turns, image, with_pixels=False)
    sep = processor.answer_separator()
    assert tok.decode(sep) == "<|im_end|>\n<|im_start|>assistant\n"
    image_end = max(i for i, t in enumerate(full["input_ids"]) if t == processor.image_token_id) + 1
    for k in range(len(sep) + 2):
        enc = processor.encode_conversation(turns, image, with_pixels=False, answer_gap=k)
        ids, labels = enc["input_ids"], enc["labels"]
        kept = min(k, len(sep))
        assert ids[image_end:image_end + kept] == sep[:kept]
        assert tok.decode(ids[image_end + kept:]).startswith("[0.100,0.200,0.300,0.400]<|im_end|>\n<|im_start|>user\n")
        assert ids[:image_end] == full["input_ids"][:image_end]
        assert len(ids) == len(full["input_ids"]) - (len(sep) - kept)
        learned = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX])
        assert learned == "[0.100,0.200,0.300,0.400]<|im_end|>[0.5,0.5,0.6,0.6]<|im_end|>"
        assert (ids == full["input_ids"]) == (k >= len(sep))
    for k, rest in ((-2, ".100,0.200"), (-3, "100,0.200")):  # the answer's own first tokens left out too
        enc = processor.encode_conversation(turns, image, with_pixels=False, answer_gap=k)
        assert tok.decode(enc["input_ids"][image_end:]).startswith(rest + ",0.300,0.400]<|im_end|>\n")
        learned = tok.decode([t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX])
        assert learned == rest + ",0.300,0.400]<|im_end|>[0.5,0.5,0.6,0.6]<|im_end|>"
    image_first = [{"from": "human", "value": "<image>\nOutput the coordinate of the cube."}, turns[1]]
    assert (processor.encode_conversation(image_first, image, with_pixels=False, answer_gap=0)["input_ids"]
            == processor.encode_conversation(image_first, image, with_pixels=False)["input_ids"])
