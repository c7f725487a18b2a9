"""`TinyGGConfig`: the composite configuration of a TinyGroundingGPT model, and its presets.

A model is three real components plus glue:

* ``clip_config``  (CLIPVision, ViT-L/14 at 336 px in the real presets),
* ``dino_config``  (DINOv2-L/14, run at the same resolution so both grids are 24 x 24),
* ``text_config``  (Qwen2, the Qwen2.5-{1.5B,3B,7B}-Instruct architectures),

and the projector (``mlp2x_gelu``: Linear(2048, H) -> GELU -> Linear(H, H)). ``tiny`` is a random model of
the same shape for tests and the CPU demo.

>>> cfg = TinyGGConfig.from_preset("tiny")
>>> cfg.num_image_tokens, cfg.object_tokens, cfg.vision_feature_dim
(64, 16, 128)
"""

from __future__ import annotations

import difflib
import math
from typing import Any, ClassVar

from transformers import CLIPVisionConfig, Dinov2Config, PreTrainedConfig, Qwen2Config
from transformers.configuration_utils import SubConfigSpec

# Hub ids of the real components; the model zoo pins their revisions.
CLIP_ID = "openai/clip-vit-large-patch14-336"
DINO_ID = "facebook/dinov2-large"
LLM_IDS = {
    "1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "3b": "Qwen/Qwen2.5-3B-Instruct",
    "7b": "Qwen/Qwen2.5-7B-Instruct",
}

# Per-tower pixel statistics (CLIP's own; DINOv2 uses ImageNet's). The processor normalises with CLIP's,
# the vision tower re-normalises for DINOv2 inside the model.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DINO_MEAN = (0.485, 0.456, 0.406)
DINO_STD = (0.229, 0.224, 0.225)

_CLIP_L_336 = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    patch_size=14, image_size=336, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)
_DINOV2_L = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, patch_size=14,
    image_size=518, layerscale_value=1.0, hidden_act="gelu", layer_norm_eps=1e-6, use_swiglu_ffn=False,
)
_QWEN25 = {
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}
_QWEN25_COMMON = dict(
    max_position_embeddings=32768, rms_norm_eps=1e-6, hidden_act="silu", bos_token_id=151643,
    eos_token_id=151645, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
)

# The tiny preset: a random model of the same architecture, sized for a 2-core CPU.
TINY = dict(
    image_size=64,
    object_tokens=16,
    clip=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              patch_size=8, image_size=64, projection_dim=64, hidden_act="quick_gelu"),
    dino=dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, mlp_ratio=2, patch_size=8,
              image_size=64, layerscale_value=1.0),
    text=dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=True,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
)

PRESETS = ("tiny", "1.5b", "3b", "7b")


class TinyGGConfig(PreTrainedConfig):
    r"""Configuration of :class:`~tinygg.modeling.TinyGGForConditionalGeneration`.

    Args:
        text_config: Qwen2 configuration of the language model.
        clip_config: CLIPVision configuration of the first tower.
        dino_config: DINOv2 configuration of the second tower.
        image_size: side of the square both towers see (336 in the paper).
        vision_feature_layer: hidden layer taken from each tower (-2: the penultimate block).
        projector_type: only ``mlp2x_gelu``.
        object_tokens: tokens one ``<object>`` crop is pooled to; a perfect square (8 x 8 = 64 by default).
        image_token_merge: k: every k x k block of neighbouring patches becomes one token (their features
            concatenated before the projector, as Qwen2-VL's patch merger does), so an ``<image>`` costs the
            LLM k*k times fewer tokens. 1 (the paper's layout) keeps one token per patch.
        image_token_id, object_token_id: ids of ``<image>`` and ``<object>`` in the tokenizer.
    """

    model_type = "tinygg"
    # Not remote code: tells tools that rebuild a model from its path (TRL's reference model) which Auto
    # class to use. Loading resolves to the class registered on `import tinygg`, never to downloaded code.
    auto_map: ClassVar[dict[str, str]] = {
        "AutoModelForImageTextToText": "tinygg.modeling.TinyGGForConditionalGeneration"}
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=Qwen2Config),
        "clip_config": SubConfigSpec(config_class=CLIPVisionConfig),
        "dino_config": SubConfigSpec(config_class=Dinov2Config),
    }

    text_config: dict | PreTrainedConfig | None = None
    clip_config: dict | PreTrainedConfig | None = None
    dino_config: dict | PreTrainedConfig | None = None
    image_size: int = 336
    vision_feature_layer: int = -2
    projector_type: str = "mlp2x_gelu"
    object_tokens: int = 64
    image_token_merge: int = 1
    image_token_id: int | None = None
    object_token_id: int | None = None
    preset: str | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.text_config is not None and self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True
        self.validate_composite()

    def validate_composite(self) -> None:
        """Raise ``ValueError`` naming the field to change when the parts do not fit together."""
        if self.projector_type != "mlp2x_gelu":
            raise ValueError(f"projector_type: only 'mlp2x_gelu' is implemented; got {self.projector_type!r}")
        side = math.isqrt(self.object_tokens)
        if side * side != self.object_tokens or side == 0:
            raise ValueError(f"object_tokens must be a perfect square (e.g. 16, 64); got {self.object_tokens}")
        if self.image_token_merge < 1:
            raise ValueError(f"image_token_merge must be >= 1; got {self.image_token_merge}")
        if self.clip_config is None or self.dino_config is None:
            return
        for name, sub in (("clip_config", self.clip_config), ("dino_config", self.dino_config)):
            if self.image_size % sub.patch_size:
                raise ValueError(f"image_size {self.image_size} is not a multiple of {name}.patch_size "
                                 f"{sub.patch_size}")
        if self.image_size // self.clip_config.patch_size != self.image_size // self.dino_config.patch_size:
            raise ValueError("clip_config.patch_size and dino_config.patch_size must give the same grid at "
                             f"image_size {self.image_size}; got {self.clip_config.patch_size} and "
                             f"{self.dino_config.patch_size}")
        if self.grid_size % self.image_token_merge:
            raise ValueError(f"image_token_merge {self.image_token_merge} does not divide the "
                             f"{self.grid_size}x{self.grid_size} patch grid")
        need = side * self.image_token_merge
        if self.grid_size < need:
            merged = f" with image_token_merge {self.image_token_merge}" if self.image_token_merge > 1 else ""
            raise ValueError(f"object_tokens {self.object_tokens}{merged} needs a {need}x{need} grid but the towers "
                             f"give {self.grid_size}x{self.grid_size}: lower object_tokens or raise image_size")
        n = abs(self.vision_feature_layer)
        for name, sub in (("clip_config", self.clip_config), ("dino_config", self.dino_config)):
            if self.vision_feature_layer == 0 or n > sub.num_hidden_layers + 1:
                raise ValueError(f"vision_feature_layer {self.vision_feature_layer} does not exist in {name} "
                                 f"({sub.num_hidden_layers} layers)")

    # ------------------------------------------------------------------ derived numbers (one source of truth)
    @property
    def grid_size(self) -> int:
        return self.image_size // self.clip_config.patch_size

    @property
    def num_image_tokens(self) -> int:
        """Tokens one ``<image>`` expands to: the patch grid (CLS dropped), e.g. 24 x 24 = 576 at 336 px,
        divided by ``image_token_merge ** 2``."""
        return (self.grid_size // self.image_token_merge) ** 2

    @property
    def vision_feature_dim(self) -> int:
        """Channels of the concatenated tower features (1024 + 1024 = 2048 for the real towers)."""
        return self.clip_config.hidden_size + self.dino_config.hidden_size

    @property
    def projector_input_dim(self) -> int:
        """Channels of one projector input token: the tower features of ``image_token_merge ** 2`` patches."""
        return self.vision_feature_dim * self.image_token_merge ** 2

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TinyGGConfig:
        """The architecture of a preset: ``tiny`` (random, CPU-sized) or ``1.5b`` / ``3b`` / ``7b``.

        ``overrides`` set top-level fields (e.g. ``object_tokens=16``).
        """
        key = str(name).strip().lower()
        if key not in PRESETS:
            close = difflib.get_close_matches(key, PRESETS, n=2, cutoff=0.3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}.{hint}")
        if key == "tiny":
            text = Qwen2Config(vocab_size=overrides.pop("vocab_size", 1024), **TINY["text"])
            kw = dict(image_size=TINY["image_size"], object_tokens=TINY["object_tokens"],
                      clip_config=CLIPVisionConfig(**TINY["clip"]), dino_config=Dinov2Config(**TINY["dino"]))
        else:
            text = Qwen2Config(**_QWEN25[key], **_QWEN25_COMMON)
            if "vocab_size" in overrides:
                text.vocab_size = overrides.pop("vocab_size")
            kw = dict(image_size=336, object_tokens=64, clip_config=CLIPVisionConfig(**_CLIP_L_336),
                      dino_config=Dinov2Config(**_DINOV2_L))
        kw.update(overrides)
        return cls(text_config=text, preset=key, **kw)


__all__ = ["CLIP_ID", "DINO_ID", "LLM_IDS", "PRESETS", "TinyGGConfig"]
