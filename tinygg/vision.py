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


def sincos_2d(grid: int, dim: int, temperature: float = 100.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes (MAE's), ``(grid*grid, dim)``, rows in row-major patch order.

    The first half of the channels encodes the row, the second the column; each half is sines then cosines
    over ``dim // 4`` frequencies from 1 down to ``1 / temperature`` radians per patch.

    >>> sincos_2d(8, 64).shape
    torch.Size([64, 64])
    """
    if dim % 4:
        raise ValueError(f"sincos_2d: dim must be a multiple of 4, got {dim}")
    omega = temperature ** -(torch.arange(dim // 4, dtype=torch.float64) / max(1, dim // 4 - 1))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        angle = pos[:, None] * omega[None, :]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


@torch.no_grad()
def init_sincos_positions(tower: DualVisionTower, grid: int,
                          which: tuple[str, ...] = ("clip", "dino")) -> None:
    """Give the towers' patch position embeddings 2-D sine-cosine values (CLS rows keep theirs).

    For towers trained from random init (the ``tiny`` preset): transformers initialises position embeddings
    with std 0.02, about a tenth of a patch's own embedding, so a random tower starts nearly blind to where a
    patch is and grounding has to learn positions first. Pretrained towers are never touched.
    """
    if "clip" in which:
        clip_pos = tower.clip.embeddings.position_embedding.weight  # (1 + grid^2, C)
        clip_pos[1:] = sincos_2d(grid, clip_pos.shape[1]).to(clip_pos)
    if "dino" in which:
        dino_pos = tower.dino.embeddings.position_embeddings  # (1, 1 + n, C)
        if dino_pos.shape[1] - 1 != grid * grid:
            raise ValueError(f"init_sincos_positions: DINOv2 has {dino_pos.shape[1] - 1} patch positions, "
                             f"the grid {grid}x{grid} needs {grid * grid} (build it at image_size)")
        dino_pos[0, 1:] = sincos_2d(grid, dino_pos.shape[2]).to(dino_pos)
