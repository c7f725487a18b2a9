"""The DiG question: two images and one instruction, worded for the box frame the model writes.

One place for the instruction, so GRPO training (:mod:`dig.grpo`) and generation for evaluation
(:mod:`dig.predict`) ask the very same question. The count of differences is never given: finding how many
there are is part of the task.

The answer frame follows the model family (:func:`box_format_for`): TinyGroundingGPT writes its own box text
(``[x1,y1,x2,y2]`` floats in 0..1 of the image padded to a square, :mod:`tinygg.boxes`); Qwen-VL models write
integers on a 0..1000 grid relative to the image. The reward (:class:`dig.rewards.RewardConfig.box_format`)
reads the same frame.

>>> messages("norm")[0]["content"][:2]
[{'type': 'image'}, {'type': 'image'}]
>>> "[[x1,y1,x2,y2], ...]" in instruction("qwen1000")
True
"""

from __future__ import annotations

from typing import Any

from dig.rewards import BOX_FORMATS

QUESTION = ("The two images differ in some places. Output the bounding boxes of all differences as a list "
            "[[x1,y1,x2,y2], ...], {frame}. Output [] if the images are identical.")
FRAMES = {
    "norm": "with coordinates between 0 and 1 relative to the image padded to a square",
    "qwen1000": "with integer coordinates from 0 to 1000 relative to the image width and height",
    "pixel": "with coordinates in pixels of the image",
}

# model_type -> the box frame that family writes; other models need box_format set explicitly.
MODEL_BOX_FORMATS = {
    "tinygg": "norm",
    "qwen2_vl": "qwen1000",
    "qwen2_5_vl": "qwen1000",
    "qwen3_vl": "qwen1000",
    "qwen3_vl_moe": "qwen1000",
}


def instruction(box_format: str) -> str:
    """The instruction text for answers in ``box_format`` ("norm", "qwen1000" or "pixel")."""
    if box_format not in FRAMES:
        raise ValueError(f"box_format must be one of {list(BOX_FORMATS)}; got {box_format!r}")
    return QUESTION.format(frame=FRAMES[box_format])


def messages(box_format: str) -> list[dict[str, Any]]:
    """The conversational prompt: one user turn holding image A, image B, then the instruction.

    The image parts carry no pixels; TRL fills them from the dataset's ``images`` column, and
    :mod:`dig.predict` from the pair's files.
    """
    return [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                         {"type": "text", "text": instruction(box_format)}]}]


def box_format_for(config: Any, requested: str = "auto") -> str:
    """The box frame for a model: ``requested`` unless it is ``"auto"``, else by the config's ``model_type``."""
    if requested != "auto":
        if requested not in BOX_FORMATS:
            raise ValueError(f"box_format must be 'auto' or one of {list(BOX_FORMATS)}; got {requested!r}")
        return requested
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_BOX_FORMATS:
        raise ValueError(f"box_format=auto: no known box frame for model_type {model_type!r} (known: "
                         f"{sorted(MODEL_BOX_FORMATS)}); set box_format to one of {list(BOX_FORMATS)}")
    return MODEL_BOX_FORMATS[model_type]
