"""The dual vision tower: CLIP ViT and DINOv2 patch features, concatenated on the channel axis.

Input is one stacked ``pixel_values`` tensor normalised with CLIP's statistics (what
:class:`~tinygg.processor.TinyGGProcessor` produces); DINOv2's own normalisation is applied inside. Output
is ``(B, grid*grid, C_clip + C_dino)``: at 336 px with two L/14 towers, ``(B, 576, 2048)``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel

from .configuration import CLIP_MEAN, CLIP_STD, DINO_MEAN, DINO_STD, TinyGGConfig


class DualVisionTower(nn.Module):
    def __init__(self, config: TinyGGConfig) -> None:
        super().__init__()
        self.clip = AutoModel.from_config(config.clip_config)
        self.dino = AutoModel.from_config(config.dino_config)
        self.feature_layer = config.vision_feature_layer
        self.image_size = config.image_size
        self.reset_buffers()

    @staticmethod
    def dino_affine() -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP-normalised -> DINO-normalised is one affine map per channel: x_d = x_c * scale + shift."""
        c_mean, c_std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        d_mean, d_std = torch.tensor(DINO_MEAN), torch.tensor(DINO_STD)
        return (c_std / d_std).view(1, 3, 1, 1), ((c_mean - d_mean) / d_std).view(1, 3, 1, 1)

    def reset_buffers(self) -> None:
        scale, shift = self.dino_affine()
        device = None if self.clip.device.type == "meta" else self.clip.device
        self.register_buffer("dino_scale", scale.to(device), persistent=False)
        self.register_buffer("dino_shift", shift.to(device), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised pixels -> (B, grid*grid, C_clip + C_dino) patch features."""
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"pixel_values must be {self.image_size}x{self.image_size} (the processor's output); "
                             f"got {tuple(pixel_values.shape[-2:])}")
        dtype = self.clip.dtype
        clip_pix = pixel_values.to(dtype)
        dino_pix = (pixel_values.float() * self.dino_scale + self.dino_shift).to(dtype)
        clip_h = self.clip(pixel_values=clip_pix, output_hidden_states=True).hidden_states[self.feature_layer]
        dino_h = self.dino(pixel_values=dino_pix, output_hidden_states=True).hidden_states[self.feature_layer]
        # Drop CLS (and any register tokens: DINOv2 keeps its patches last).
        n = clip_h.shape[1] - 1
        return torch.cat([clip_h[:, 1:], dino_h[:, -n:]], dim=-1)  # (B, N, C_clip + C_dino)
