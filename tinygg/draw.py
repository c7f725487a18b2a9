"""Boxes drawn on images: predictions, ground truth, DiG differences."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

PRED_COLOR = (230, 40, 40)
GT_COLOR = (40, 200, 60)
PALETTE = [(230, 40, 40), (40, 120, 230), (40, 200, 60), (240, 170, 20), (170, 60, 220), (20, 200, 200)]


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str] | None = None,
               color: tuple[int, int, int] | None = None, width: int | None = None) -> Image.Image:
    """A copy of ``image`` with pixel boxes ``[x1,y1,x2,y2]`` outlined (and labelled when labels are given)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = width or max(1, round(max(out.size) / 200))
    for i, box in enumerate(boxes):
        c = color or PALETTE[i % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=c, width=width)
        if labels is not None and i < len(labels) and labels[i]:
            tx, ty = min(x1, x2) + width, max(0.0, min(y1, y2) - 11)
            text_box = draw.textbbox((tx, ty), labels[i])
            draw.rectangle(text_box, fill=c)
            draw.text((tx, ty), labels[i], fill=(255, 255, 255))
    return out


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 8) -> Image.Image:
    """Two images next to each other on a white canvas (a DiG pair, or before/after)."""
    h = max(left.height, right.height)
    canvas = Image.new("RGB", (left.width + gap + right.width, h), (255, 255, 255))
    canvas.paste(left.convert("RGB"), (0, 0))
    canvas.paste(right.convert("RGB"), (left.width + gap, 0))
    return canvas
