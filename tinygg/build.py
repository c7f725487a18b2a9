"""Assemble a stage-0 TinyGroundingGPT checkpoint from its components.

Real presets take pretrained CLIP ViT-L/14-336, DINOv2-L and Qwen2.5-*-Instruct (hub ids or local
directories); the projector starts random. ``tiny`` builds everything locally with random weights (no
download). The tokenizer gains ``<image>`` and ``<object>`` and the embeddings are resized to fit.

Launch: ``tinygg build --preset 1.5b --out checkpoints/tinygg-1.5b-stage0``
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

from .configuration import CLIP_ID, DINO_ID, LLM_IDS, TinyGGConfig
from .modeling import TinyGGForConditionalGeneration, TinyGGProjector
from .processor import TinyGGProcessor
from .tokenizer import add_multimodal_tokens, build_tiny_tokenizer
from .vision import init_sincos_positions

logger = logging.getLogger(__name__)


def _pad_vocab(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


def build_model(preset: str, clip: str | None = None, dino: str | None = None, llm: str | None = None,
                seed: int = 0, dtype: torch.dtype = torch.float32, embed_std: float | None = None,
                **overrides) -> tuple[TinyGGForConditionalGeneration, TinyGGProcessor]:
    """A stage-0 model and its processor.

    For real presets ``clip``/``dino``/``llm`` default to the official hub ids; any of them may be a local
    directory. For ``tiny`` they are optional: given, they replace the random parts (the preset's
    ``image_size`` must then suit their patch size). ``embed_std`` re-initialises a random LLM's token
    embeddings (tied to the output head in the tiny preset) with that standard deviation instead of the
    config's ``initializer_range`` (0.02): the 4-layer binding toy binds words to image objects only with
    large ones (docs/demo_recipe.md, sections 13-14); in the real tiny model it made no difference there.
    """
    torch.manual_seed(seed)
    key = preset.strip().lower()
    TinyGGConfig.from_preset(key)  # validates the name before any download
    if key != "tiny":
        clip, dino, llm = clip or CLIP_ID, dino or DINO_ID, llm or LLM_IDS[key]
    if embed_std is not None:  # before anything is downloaded or loaded
        if llm:
            raise ValueError("embed_std re-initialises a random LLM's embeddings; the LLM here is pretrained "
                             f"({llm})")
        if embed_std <= 0:
            raise ValueError(f"embed_std must be positive; got {embed_std}")
    clip, dino, llm = (_component(c) for c in (clip, dino, llm))
    if llm:
        tokenizer = AutoTokenizer.from_pretrained(llm)
    else:
        tokenizer = build_tiny_tokenizer()
    image_id, object_id = add_multimodal_tokens(tokenizer)
    config = TinyGGConfig.from_preset(key, image_token_id=image_id, object_token_id=object_id, **overrides)
    if key == "tiny" and not llm:
        config.text_config.vocab_size = _pad_vocab(len(tokenizer))

    parts: dict[str, torch.nn.Module] = {}
    if clip:
        logger.info("loading CLIP vision tower from %s", clip)
        parts["clip"] = CLIPVisionModel.from_pretrained(clip, dtype=dtype)
        config.clip_config = parts["clip"].config
    if dino:
        logger.info("loading DINOv2 from %s", dino)
        parts["dino"] = AutoModel.from_pretrained(dino, dtype=dtype)
        config.dino_config = parts["dino"].config
    if llm:
        logger.info("loading the LLM from %s", llm)
        parts["llm"] = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype)
        config.text_config = parts["llm"].config
        config.tie_word_embeddings = bool(config.text_config.tie_word_embeddings)
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.text_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config.validate_composite()

    if not parts:
        model = TinyGGForConditionalGeneration(config).to(dtype)
    else:
        # Build the shell on the meta device and move the pretrained parts in: no second copy of the
        # weights and no random init of billions of parameters that would be overwritten.
        with torch.device("meta"):
            model = TinyGGForConditionalGeneration(config)
        tower = model.model.vision_tower
        tower.clip = parts.get("clip") or AutoModel.from_config(config.clip_config, dtype=dtype)
        tower.dino = parts.get("dino") or AutoModel.from_config(config.dino_config, dtype=dtype)
        tower.reset_buffers()
        if "llm" in parts:
            model.model.language_model = parts["llm"].model
            model.lm_head = parts["llm"].lm_head
        else:
            model.model.language_model = AutoModel.from_config(config.text_config, dtype=dtype)
            model.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size,
                                            bias=False, dtype=dtype)
        model.model.multi_modal_projector = TinyGGProjector(config).to(dtype)
        model.tie_weights()
    if embed_std is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, embed_std)
    random_towers = tuple(t for t in ("clip", "dino") if t not in parts)
    if random_towers:  # fixed 2-D positions for towers that start from random init (tinygg.vision)
        init_sincos_positions(model.model.vision_tower, config.grid_size, random_towers)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(_pad_vocab(len(tokenizer)), mean_resizing=True)
    model.config.text_config.vocab_size = model.get_input_embeddings().num_embeddings
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = tokenizer.pad_token_id, config.text_config.eos_token_id, None
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k = False, None, None, None
    processor = TinyGGProcessor.from_config(tokenizer, model.config)
    return model, processor


def _component(source: str | None) -> str | None:
    """A local directory as is; a hub id the model zoo knows is fetched at its pinned revision and verified
    (CLIP-336 ships pickle weights only: the zoo converts them to safetensors); other hub ids go to
    ``from_pretrained`` directly."""
    if source is None or Path(source).is_dir():
        return source
    try:
        from model_zoo import UnknownModelError, resolve_model
    except ImportError:
        return source
    try:
        return str(resolve_model(source))
    except UnknownModelError:
        logger.warning("%s is not in the model zoo: loading it unpinned from the hub", source)
        return source


def save_checkpoint(model: TinyGGForConditionalGeneration, processor: TinyGGProcessor, out: str | Path,
                    half: bool = False) -> Path:
    """Write a directory that the Auto classes load (safetensors weights, config, processor, tokenizer)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if half:
        model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
