"""Where the model looked while writing its box: the last layer's attention from the generated box tokens
over the image patches, drawn as a heat map on the image (the paper's Figure 5).

The answer is generated greedily; then the prompt plus answer go through the model once more with eager
attention (the fused kernels do not return weights) and ``output_attentions``. The rows of the tokens that
spell the first ``[x1,y1,x2,y2]`` of the answer (all answer tokens when it holds no box) are averaged over
heads and tokens, restricted to the columns of the first ``<image>``'s placeholders, laid out on the patch
grid, upsampled to the padded square, cropped back to the original image and blended over it with the
predicted box.

    tinygg predict --model M --image photo.jpg --prompt "Output the coordinate of the dog" --attention att.png
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .boxes import BOX_PATTERN, parse_box, square_geometry, square_to_pixel
from .draw import PRED_COLOR, draw_boxes
from .inference import Query, encode_queries

logger = logging.getLogger(__name__)

COLORMAP = "jet"
ALPHA = 0.5  # weight of the heat map in the blend


@contextmanager
def eager_attention(model) -> Iterator[None]:
    """Switch the model (and its sub-models) to eager attention for the block, then restore."""
    cfg = model.config
    before = {"": cfg._attn_implementation}
    before.update({name: getattr(cfg, name)._attn_implementation for name in getattr(cfg, "sub_configs", {})})
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def token_char_spans(processor, token_ids: Sequence[int]) -> list[tuple[int, int]]:
    """The character span each token adds to the decoded text (special tokens add nothing)."""
    spans, prev = [], 0
    for i in range(len(token_ids)):
        n = len(processor.decode(token_ids[:i + 1], skip_special_tokens=True))
        spans.append((prev, max(prev, n)))
        prev = max(prev, n)
    return spans


def box_token_indices(processor, token_ids: Sequence[int]) -> list[int]:
    """Indices of the tokens that spell the first box of the decoded text; all tokens when there is none."""
    text = processor.decode(token_ids, skip_special_tokens=True)
    m = BOX_PATTERN.search(text)
    if m is None:
        return list(range(len(token_ids)))
    start, end = m.span()
    return [i for i, (a, b) in enumerate(token_char_spans(processor, token_ids)) if a < end and b > start]


def patch_heatmap(weights: np.ndarray, width: int, height: int) -> np.ndarray:
    """(grid*grid,) patch weights -> (height, width) map in [0, 1] over the original image.

    The patch grid covers the padded square; it is upsampled to the square's side and cropped to where
    the image sits in it.
    """
    grid = round(len(weights) ** 0.5)
    if grid * grid != len(weights):
        raise ValueError(f"{len(weights)} image tokens do not form a square patch grid")
    side, ox, oy = square_geometry(width, height)
    square = Image.fromarray(weights.reshape(grid, grid).astype(np.float32))  # mode "F"
    square = square.resize((side, side), Image.Resampling.BILINEAR)
    heat = np.asarray(square.crop((ox, oy, ox + width, oy + height)), dtype=np.float32)  # (H, W)
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def overlay_heatmap(image: Image.Image, heat: np.ndarray, alpha: float = ALPHA) -> Image.Image:
    """``image`` blended with ``heat`` ((H, W) in [0, 1]) coloured by the colormap."""
    from matplotlib import colormaps

    rgb = (colormaps[COLORMAP](heat)[..., :3] * 255).astype(np.uint8)  # (H, W, 3)
    return Image.blend(image.convert("RGB"), Image.fromarray(rgb), alpha)


@torch.no_grad()
def answer_with_attention(model, processor, query: Query, out_png: str | Path,
                          max_new_tokens: int = 64) -> str:
    """Answer ``query`` greedily and write the heat map of its box tokens' attention to ``out_png``.

    Returns the answer text (as :func:`tinygg.inference.generate` gives it).
    """
    if not query.images:
        raise ValueError("an attention map needs an image in the query")
    image = query.images[0]
    batch = encode_queries(model, processor, [query])
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)  # (1, T + N)
    prompt_len = batch["input_ids"].shape[1]
    generated = out[0, prompt_len:].tolist()
    stops = {processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id,
             processor.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    for i, t in enumerate(generated):
        if t in stops:
            generated = generated[:i]
            break
    answer = processor.decode(generated, skip_special_tokens=True)

    full = torch.cat([batch["input_ids"][0], torch.tensor(generated, dtype=torch.long,
                                                          device=batch["input_ids"].device)])[None]  # (1, L)
    with eager_attention(model):
        outputs = model(input_ids=full, attention_mask=torch.ones_like(full),
                        pixel_values=batch["pixel_values"], output_attentions=True, use_cache=False)
    last = outputs.attentions[-1][0].float()  # (heads, L, L)
    if generated:
        rows = [prompt_len + i for i in box_token_indices(processor, generated)]
    else:  # nothing generated: the position that chose to stop
        rows = [prompt_len - 1]
    image_cols = (full[0] == model.config.image_token_id).nonzero().flatten()[:model.config.num_image_tokens]
    weights = last[:, rows][:, :, image_cols].mean(dim=(0, 1)).cpu().numpy()  # (grid*grid,)
    heat = patch_heatmap(weights, image.width, image.height)
    drawn = overlay_heatmap(image, heat)
    box = parse_box(answer)
    if box is not None:
        drawn = draw_boxes(drawn, [square_to_pixel(box, image.width, image.height)], labels=["pred"],
                           color=PRED_COLOR)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    drawn.save(out_png)
    logger.info("attention of %d answer token(s) over %d image patches -> %s", len(rows), len(image_cols),
                out_png)
    return answer.strip()
