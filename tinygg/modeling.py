"""TinyGroundingGPT: dual vision tower -> ``mlp2x_gelu`` projector -> Qwen2, laid out like transformers' LLaVA.

``<image>`` placeholders receive the projected patch features of the whole (padded, resized) image;
``<object>`` placeholders receive the features of an object crop, average-pooled to ``object_tokens``.
Both come from one stacked ``pixel_values`` tensor whose rows are in the order their placeholders appear
in ``input_ids`` (row-major over the batch): the model tells images from objects by the placeholder ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, ModelOutput

from .configuration import TinyGGConfig
from .vision import DualVisionTower


@dataclass
class TinyGGModelOutputWithPast(BaseModelOutputWithPast):
    image_hidden_states: torch.Tensor | None = None


@dataclass
class TinyGGCausalLMOutputWithPast(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    image_hidden_states: torch.Tensor | None = None


def merge_patches(features: torch.Tensor, merge: int) -> torch.Tensor:
    """(n, g*g, C) patch features in row-major order -> (n, (g/merge)**2, merge*merge*C): each merge x merge
    block of neighbours concatenated into one token (row-major blocks; inside a block, row-major patches)."""
    if merge == 1:
        return features
    n, tokens, channels = features.shape
    g = math.isqrt(tokens)
    s = g // merge
    x = features.reshape(n, s, merge, s, merge, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, s * s, merge * merge * channels)


class TinyGGProjector(nn.Module):
    """``mlp2x_gelu``: Linear(C_vision * merge**2, H) -> GELU -> Linear(H, H)."""

    def __init__(self, config: TinyGGConfig) -> None:
        super().__init__()
        hidden = config.text_config.hidden_size
        self.linear_1 = nn.Linear(config.projector_input_dim, hidden)
        self.act = ACT2FN["gelu"]
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


class TinyGGPreTrainedModel(PreTrainedModel):
    config_class = TinyGGConfig
    config: TinyGGConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["cache"]
    _no_split_modules = ["Qwen2DecoderLayer", "CLIPEncoderLayer", "Dinov2Layer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DualVisionTower):  # non-persistent buffers are not in the checkpoint
            scale, shift = module.dino_affine()
            init.copy_(module.dino_scale, scale)
            init.copy_(module.dino_shift, shift)


def placeholder_order(input_ids: torch.Tensor, image_token_id: int, object_token_id: int,
                      image_len: int, object_len: int) -> torch.Tensor:
    """Which ``pixel_values`` row is an object: a bool tensor (n_rows,), rows in placeholder order.

    Raises ``ValueError`` when the placeholder counts are not whole images / objects.
    """
    flat = input_ids.reshape(-1)
    is_img, is_obj = flat == image_token_id, flat == object_token_id
    n_img, n_obj = int(is_img.sum()), int(is_obj.sum())
    if n_img % image_len or n_obj % object_len:
        raise ValueError(
            f"placeholder tokens are not whole images/objects: {n_img} <image> tokens (expected a multiple of "
            f"{image_len}) and {n_obj} <object> tokens (expected a multiple of {object_len}); expand prompts "
            "with TinyGGProcessor")
    img_starts = is_img & ((torch.cumsum(is_img.long(), 0) - 1) % image_len == 0)
    obj_starts = is_obj & ((torch.cumsum(is_obj.long(), 0) - 1) % object_len == 0)
    starts = img_starts | obj_starts
    return obj_starts[starts]


class TinyGGModel(TinyGGPreTrainedModel):
    """Towers + projector + Qwen2 backbone; returns ``last_hidden_state`` (no LM head)."""

    def __init__(self, config: TinyGGConfig) -> None:
        super().__init__(config)
        self.vision_tower = DualVisionTower(config)
        self.multi_modal_projector = TinyGGProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def pool_objects(self, features: torch.Tensor) -> torch.Tensor:
        """(n, grid*grid, C) crop features -> (n, object_tokens, C * merge**2): average pooling on the patch
        grid to ``sqrt(object_tokens) * image_token_merge`` a side, then the same patch merge as images."""
        n, _, channels = features.shape
        merge = self.config.image_token_merge
        grid, side = self.config.grid_size, math.isqrt(self.config.object_tokens) * merge
        x = features.transpose(1, 2).reshape(n, channels, grid, grid)
        x = F.adaptive_avg_pool2d(x.float(), side).to(features.dtype)
        return merge_patches(x.flatten(2).transpose(1, 2), merge)  # (n, object_tokens, C * merge**2)

    def get_image_features(self, pixel_values: torch.Tensor, is_object: torch.Tensor | None = None,
                           vision_features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected features of every ``pixel_values`` row.

        Returns ``(image_features, object_features)``: ``(n_images * num_image_tokens, H)`` and
        ``(n_objects * object_tokens, H)``, each in row order. ``vision_features`` (precomputed tower
        outputs, ``(n, grid*grid, C)``) skips the towers (the frozen-tower feature cache).
        """
        feats = self.vision_tower(pixel_values) if vision_features is None else vision_features
        if is_object is None:
            is_object = torch.zeros(feats.shape[0], dtype=torch.bool, device=feats.device)
        is_object = is_object.to(feats.device)
        proj_dtype = self.multi_modal_projector.linear_1.weight.dtype
        images = self.multi_modal_projector(merge_patches(feats[~is_object], self.config.image_token_merge)
                                            .to(proj_dtype))
        objects = self.multi_modal_projector(self.pool_objects(feats[is_object]).to(proj_dtype))
        hidden = images.shape[-1]
        return images.reshape(-1, hidden), objects.reshape(-1, hidden)

    def merge_multimodal(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                         pixel_values: torch.Tensor | None, vision_features: torch.Tensor | None) -> tuple:
        cfg = self.config
        is_object = placeholder_order(input_ids, cfg.image_token_id, cfg.object_token_id,
                                      cfg.num_image_tokens, cfg.object_tokens)
        n_rows = (vision_features if vision_features is not None else pixel_values).shape[0]
        if is_object.numel() != n_rows:
            raise ValueError(
                f"the prompts hold {int((~is_object).sum())} <image> and {int(is_object.sum())} <object> "
                f"placeholders ({is_object.numel()} in all) but pixel_values has {n_rows} rows; give one row "
                "per placeholder, in order")
        image_feats, object_feats = self.get_image_features(pixel_values, is_object, vision_features)
        embeds = inputs_embeds
        for token_id, feats in ((cfg.image_token_id, image_feats), (cfg.object_token_id, object_feats)):
            mask = (input_ids == token_id).unsqueeze(-1).to(embeds.device)
            embeds = embeds.masked_scatter(mask, feats.to(embeds.device, embeds.dtype))
        return embeds, image_feats

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> TinyGGModelOutputWithPast:
        cache = kwargs.pop("past_key_values", cache)  # the name before transformers 5.24
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        image_feats = None
        if pixel_values is not None or vision_features is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids to locate the <image>/<object> placeholders")
            inputs_embeds, image_feats = self.merge_multimodal(input_ids, inputs_embeds, pixel_values,
                                                               vision_features)
        elif input_ids is not None and cache is None and self.config.image_token_id is not None:
            n = int(((input_ids == self.config.image_token_id) | (input_ids == self.config.object_token_id)).sum())
            if n:
                raise ValueError(f"the prompts hold {n} <image>/<object> placeholder tokens but no pixel_values "
                                 "were given")
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return TinyGGModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_feats,
        )


class TinyGGForConditionalGeneration(TinyGGPreTrainedModel, GenerationMixin):
    """TinyGroundingGPT with its LM head: ``forward`` gives logits (and the loss with ``labels``)."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: TinyGGConfig) -> None:
        super().__init__(config)
        self.model = TinyGGModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    @property
    def vision_tower(self) -> DualVisionTower:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> TinyGGProjector:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        vision_features: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> TinyGGCausalLMOutputWithPast:
        cache = kwargs.pop("past_key_values", cache)  # the name before transformers 5.24
        outputs = self.model(
            input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
            position_ids=position_ids, cache=cache, inputs_embeds=inputs_embeds,
            vision_features=vision_features, use_cache=use_cache, **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                      **kwargs)
        return TinyGGCausalLMOutputWithPast(
            loss=loss, logits=logits, cache=outputs.cache,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )


__all__ = ["TinyGGForConditionalGeneration", "TinyGGModel", "TinyGGPreTrainedModel", "placeholder_order"]
