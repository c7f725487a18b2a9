"""The model: presets, save/load through the Auto classes, generation, placeholder checks."""

import pytest
import torch
from conftest import random_image

from tinygg import TinyGGConfig, TinyGGForConditionalGeneration


@pytest.mark.parametrize("preset,llm_params", [("1.5b", 1.54e9), ("3b", 3.09e9), ("7b", 7.62e9)])
def test_real_preset_parameter_counts_on_meta(preset, llm_params):
    cfg = TinyGGConfig.from_preset(preset)
    with torch.device("meta"):
        model = TinyGGForConditionalGeneration(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())
    tower = model.model.vision_tower
    assert count(tower.clip) == pytest.approx(303.5e6, rel=0.002)
    assert count(tower.dino) == pytest.approx(304.4e6, rel=0.002)  # 303.5M + 1.4M position table at 518 px
    llm = count(model.model.language_model) + (0 if cfg.tie_word_embeddings else count(model.lm_head))
    assert llm == pytest.approx(llm_params, rel=0.005)
    assert cfg.num_image_tokens == 576 and cfg.vision_feature_dim == 2048
    assert model.model.multi_modal_projector.linear_1.in_features == 2048


def test_tiny_preset_is_small():
    cfg = TinyGGConfig.from_preset("tiny")
    model = TinyGGForConditionalGeneration(cfg)
    assert sum(p.numel() for p in model.parameters()) < 5e6


def test_unknown_preset_suggests():
    with pytest.raises(ValueError, match="unknown preset '3bb'.*'3b'"):
        TinyGGConfig.from_preset("3bb")


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="object_tokens must be a perfect square"):
        TinyGGConfig.from_preset("tiny", object_tokens=10)
    with pytest.raises(ValueError, match="image_token_merge 3 does not divide the 8x8 patch grid"):
        TinyGGConfig.from_preset("tiny", image_token_merge=3)
    with pytest.raises(ValueError, match="object_tokens 16 with image_token_merge 4 needs a 16x16 grid"):
        TinyGGConfig.from_preset("tiny", image_token_merge=4)


def test_image_token_merge_concatenates_neighbouring_patches(tmp_path):
    """merge 2: an <image> is a quarter of the tokens, each the projection of a 2 x 2 block of patch
    features; the model saves, reloads and generates the same way batched and alone."""
    from transformers import AutoModelForImageTextToText

    from tinygg.build import build_model, save_checkpoint
    from tinygg.inference import Query, generate

    model, processor = build_model("tiny", seed=0, image_token_merge=2)
    model.eval()
    cfg = model.config
    assert cfg.num_image_tokens == processor.num_image_tokens == 16
    assert model.model.multi_modal_projector.linear_1.in_features == 4 * cfg.vision_feature_dim
    pixels = processor(text=[_prompt(processor, "<image>\nhi")], images=[random_image(40, 40)])["pixel_values"]
    with torch.no_grad():
        feats = model.model.vision_tower(pixels)  # (1, 64, C) on the 8 x 8 grid
        img, _ = model.model.get_image_features(pixels)
        grid = feats[0].reshape(8, 8, -1)
        block = torch.cat([grid[2, 4], grid[2, 5], grid[3, 4], grid[3, 5]])  # merged token (row 1, col 2)
        assert torch.allclose(img[1 * 4 + 2], model.model.multi_modal_projector(block), atol=1e-6)
    out = save_checkpoint(model, processor, tmp_path / "merged")
    loaded = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert loaded.config.image_token_merge == 2
    qs = [Query("Output the coordinate of the red cube.", [random_image(64, 64, 3)]),
          Query("What is this <object>?", [random_image(50, 90, 4)], [[5, 5, 40, 60]])]
    assert generate(loaded, processor, qs, batch_size=2, max_new_tokens=8) == \
        generate(model, processor, qs, batch_size=1, max_new_tokens=8)


def _prompt(processor, value):
    return processor.format_chat([{"from": "human", "value": value}], add_generation_prompt=True)


def test_save_auto_load_identical_logits(tiny_model, tiny_checkpoint):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = tiny_model
    loaded = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint).eval()
    proc2 = AutoProcessor.from_pretrained(tiny_checkpoint)
    assert type(loaded) is TinyGGForConditionalGeneration and type(proc2) is type(processor)
    img = random_image(80, 48)
    text = _prompt(processor, "<image>\nWhat is <object>?")
    a = processor(text=[text], images=[img], objects=[[[10, 5, 40, 30]]])
    b = proc2(text=[text], images=[img], objects=[[[10, 5, 40, 30]]])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    with torch.no_grad():
        assert torch.equal(model(**a).logits, loaded(**b).logits)


def test_cached_and_uncached_generation_identical(tiny_model):
    model, processor = tiny_model
    imgs = [random_image(64, 40, 1), random_image(30, 70, 2)]
    texts = [_prompt(processor, "<image>\nOutput the coordinate of the cube."),
             _prompt(processor, "<image>\nWhere is <object>? Answer in short.")]
    batch = processor(text=texts, images=[[imgs[0]], [imgs[1]]], objects=[[], [[2, 3, 20, 40]]],
                      padding_side="left")
    with torch.no_grad():
        cached = model.generate(**batch, max_new_tokens=12, do_sample=False, use_cache=True)
        uncached = model.generate(**batch, max_new_tokens=12, do_sample=False, use_cache=False)
    assert cached.shape[1] == batch["input_ids"].shape[1] + 12 or cached.shape[1] > batch["input_ids"].shape[1]
    assert torch.equal(cached, uncached)


def test_batched_equals_single(tiny_model):
    """Left-padded batches give the same greedy tokens as one prompt at a time."""
    from tinygg.inference import Query, generate

    model, processor = tiny_model
    qs = [Query("Output the coordinate of the red cube.", [random_image(64, 64, 3)]),
          Query("What is this <object>? Describe the whole picture in detail please.", [random_image(50, 90, 4)],
                [[5, 5, 40, 60]])]
    assert generate(model, processor, qs, batch_size=2, max_new_tokens=10) == \
        generate(model, processor, qs, batch_size=1, max_new_tokens=10)


def test_processor_token_counts_match_model_features(tiny_model):
    model, processor = tiny_model
    cfg = model.config
    assert processor.num_image_tokens == cfg.num_image_tokens and processor.object_tokens == cfg.object_tokens
    text = _prompt(processor, "<image>\n<object> and <object>")
    batch = processor(text=[text], images=[random_image(40, 40)], objects=[[[0, 0, 10, 10], [5, 5, 30, 20]]])
    ids = batch["input_ids"][0]
    with torch.no_grad():
        img, obj = model.model.get_image_features(
            batch["pixel_values"], torch.tensor([False, True, True]))
    assert int((ids == cfg.image_token_id).sum()) == img.shape[0] == cfg.num_image_tokens
    assert int((ids == cfg.object_token_id).sum()) == obj.shape[0] == 2 * cfg.object_tokens


def test_count_mismatch_raises_with_both_numbers(tiny_model):
    model, processor = tiny_model
    batch = processor(text=[_prompt(processor, "<image>\nhi")], images=[random_image(32, 32)])
    two_rows = torch.cat([batch["pixel_values"]] * 2)
    with pytest.raises(ValueError, match=r"1 <image> and 0 <object> placeholders .* 2 rows"):
        model(input_ids=batch["input_ids"], pixel_values=two_rows)
    cut = batch["input_ids"][:, :-70]  # cuts into the image placeholders
    with pytest.raises(ValueError, match="not whole images"):
        model(input_ids=cut, pixel_values=batch["pixel_values"])
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=batch["input_ids"])


def test_gradients_reach_every_trainable_part(tiny_model):
    import copy

    model, processor = tiny_model
    model = copy.deepcopy(model).train()
    enc = processor.encode_conversation(
        [{"from": "human", "value": "<image>\nWhere is <object>?"}, {"from": "gpt", "value": "[0.1,0.2,0.3,0.4]"}],
        images=[random_image(48, 48)], objects=[[4, 4, 30, 30]])
    out = model(input_ids=torch.tensor([enc["input_ids"]]), labels=torch.tensor([enc["labels"]]),
                pixel_values=torch.tensor(enc["pixel_values"]))
    out.loss.backward()
    for part in (model.model.vision_tower.clip, model.model.vision_tower.dino, model.model.multi_modal_projector,
                 model.model.language_model):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_random_towers_start_with_2d_sincos_positions() -> None:
    """Random towers get fixed 2-D sine-cosine patch positions (a random init of std 0.02 leaves a tower
    nearly blind to where a patch is): every patch code is distinct, the closest code to a patch's is a grid
    neighbour's, both towers hold them, and CLS keeps its random init."""
    from tinygg.build import build_model
    from tinygg.vision import sincos_2d

    grid, dim = 8, 64
    codes = sincos_2d(grid, dim)
    d = torch.cdist(codes, codes)
    d.fill_diagonal_(float("inf"))
    nearest = d.argmin(dim=1)
    rows, cols = torch.arange(grid * grid) // grid, torch.arange(grid * grid) % grid
    assert bool((((rows - rows[nearest]).abs() + (cols - cols[nearest]).abs()) == 1).all())
    model, _ = build_model("tiny")
    tower = model.model.vision_tower
    clip_pos = tower.clip.embeddings.position_embedding.weight
    dino_pos = tower.dino.embeddings.position_embeddings[0]
    n = model.config.grid_size
    assert torch.allclose(clip_pos[1:], sincos_2d(n, clip_pos.shape[1]))
    assert torch.allclose(dino_pos[1:], sincos_2d(n, dino_pos.shape[1]))
    assert float(clip_pos[0].detach().std()) < 0.1  # CLS: transformers' own init
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_2d(4, 6)
