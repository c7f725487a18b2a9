"""The DiG GRPO stage and DiG generation on a stock HF VLM: a tiny random Qwen2-VL built locally and loaded by
path (the paper's backbones are Qwen2.5-VL / Qwen3-VL; they share this processor and the 0-1000 box grid).

transformers' Qwen2VLProcessor insists on a video processor, which needs torchvision (not installable here),
so the test gives it only the PIL image processor through a subclass; on a machine with torchvision the stage
loads the checkpoint's own processor with AutoProcessor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def image_only_qwen2vl_processor(image_processor, tokenizer, chat_template):
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.video_processor = None
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=chat_template)


@pytest.fixture(scope="module")
def tiny_qwen2vl(tmp_path_factory):
    """(checkpoint dir, processor): 2 text layers of width 64, a 1-block vision encoder, images of 4-16 tokens."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from tinygg.tokenizer import build_tiny_tokenizer

    torch.manual_seed(0)
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": VISION_TOKENS}, replace_extra_special_tokens=False)
    start, end, image, video = tok.convert_tokens_to_ids(VISION_TOKENS)
    processor = image_only_qwen2vl_processor(Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16),
                                             tok, QWEN_CHAT_TEMPLATE)
    config = Qwen2VLConfig(
        text_config={"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "bos_token_id": None,
                     "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"), "pad_token_id": tok.pad_token_id},
        vision_config={"depth": 1, "embed_dim": 32, "num_heads": 2, "hidden_size": 64, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3},
        image_token_id=image, video_token_id=video, vision_start_token_id=start, vision_end_token_id=end)
    path = tmp_path_factory.mktemp("qwen2vl") / "tiny-qwen2vl"
    Qwen2VLForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path, processor


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    from dig.pairs import PairConfig, generate_pairs

    root = tmp_path_factory.mktemp("qwen_pairs")
    generate_pairs(PairConfig(out=root, n=2, difficulty="single", size=(64, 48)), progress=False)
    return root


def test_grpo_trains_a_qwen2vl_step(tiny_qwen2vl, pairs, tmp_path, monkeypatch):
    from dig.grpo import load_stage_config, run_stage

    path, processor = tiny_qwen2vl
    (tmp_path / "dig_test_scripted.py").write_text(  # any function of the text: answers that differ score apart
        "from dig.rewards import completion_text\n"
        "def text_hash(prompts=None, completions=(), **kw):\n"
        "    return [sum(map(ord, completion_text(x))) % 97 / 97 for x in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_stage_config(None, [f"init={path}", f"pairs={pairs}", f"output_dir={tmp_path / 'out'}", "max_steps=1",
                                   "per_device_batch_size=4", "num_generations=2", "max_completion_length=8", "gradient_accumulation_steps=1",
                                   "learning_rate=1e-2", "extra_rewards=[dig_test_scripted:text_hash]", "freeze_vision=true"])
    final = run_stage(cfg, name="qwen", processor=processor)
    done = json.loads((final / "dig_stage.json").read_text())
    assert done["box_format"] == "qwen1000" and done["steps"] == 1  # auto: the Qwen-VL 0-1000 grid
    before, after = load_file(path / "model.safetensors"), load_file(final / "model.safetensors")
    text = [k for k in before if k.startswith("model.layers.")]  # saved in Qwen2-VL's original key layout
    vision = [k for k in before if k.startswith("visual.")]
    assert text and vision
    assert any(not torch.equal(before[k], after[k]) for k in text)
    assert all(torch.equal(before[k], after[k]) for k in vision)
    hist = [json.loads(x) for x in (tmp_path / "out" / "log_history.jsonl").read_text().splitlines()]
    assert "rewards/dig_f1/mean" in next(h for h in hist if "reward" in h)


def test_dig_answers_from_a_qwen2vl(tiny_qwen2vl, pairs):
    from transformers import AutoModelForImageTextToText

    from dig.evaluate import score_predictions
    from dig.pairs import read_pairs
    from dig.predict import answer_pairs
    from dig.rewards import RewardConfig

    path, processor = tiny_qwen2vl
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    records = read_pairs(pairs)
    batched = answer_pairs(model, processor, records, "qwen1000", batch_size=2, max_new_tokens=6)
    single = answer_pairs(model, processor, records[1:], "qwen1000", batch_size=1, max_new_tokens=6)
    assert len(batched) == 2 and all(isinstance(t, str) for t in batched)
    assert batched[1] == single[0]  # left padding: a batch answers as each pair alone
    result = score_predictions(records, batched, RewardConfig(box_format="qwen1000"))
    assert result["overall"]["n"] == 2
