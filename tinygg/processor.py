"""`TinyGGProcessor`: images, object crops and chat text -> model inputs. The one place that knows how many
tokens an ``<image>`` and an ``<object>`` expand to.

Images are padded to a square with the CLIP mean colour (centred), resized to ``image_size`` and
CLIP-normalised. An ``<object>`` is a crop of the sample's first image by a pixel box, then padded and
resized the same way. All pictures of a batch are stacked into one ``pixel_values`` tensor, in the order
their placeholders appear in the text (row-major over the batch).

Conversations use ChatML (Qwen2.5): ``<|im_start|>role\\n...<|im_end|>\\n``, default system prompt
"You are a helpful assistant.", no BOS; training labels cover only the assistant turns (their text and
closing ``<|im_end|>``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature

from .boxes import square_geometry, validate_pixel_box
from .configuration import CLIP_MEAN, CLIP_STD
from .tokenizer import IMAGE_TOKEN, OBJECT_TOKEN

DEFAULT_SYSTEM = "You are a helpful assistant."
PAD_COLOR = tuple(round(m * 255) for m in CLIP_MEAN)  # (122, 117, 104)
IGNORE_INDEX = -100
_PLACEHOLDER = re.compile(f"({re.escape(IMAGE_TOKEN)}|{re.escape(OBJECT_TOKEN)})")
ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}

# ChatML for `apply_chat_template`; content may be a string or a list of {"type": "image"|"text"} parts.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'object' %}<object>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


SAMPLE_PREFIX = "sample:"


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB; a missing or non-image file raises an error naming it.

    ``sample:NAME`` loads a photograph shipped by scikit-image (``sample:astronaut``, ``sample:coffee``,
    ``sample:chelsea``, ``sample:rocket``...), so demos need no download.
    """
    if isinstance(path, str) and path.startswith(SAMPLE_PREFIX):
        return _sample_image(path[len(SAMPLE_PREFIX):])
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image (expected PNG/JPEG/...): {e}") from None


def placeholder_kinds(text: str) -> list[str]:
    """``"image"`` / ``"object"`` for each placeholder of ``text``, in order (= the order of pixel rows)."""
    return ["image" if m == IMAGE_TOKEN else "object" for m in _PLACEHOLDER.findall(text)]


def _sample_image(name: str) -> Image.Image:
    try:
        from skimage import data
    except ImportError:
        raise ValueError(f"sample:{name} needs scikit-image (pip install scikit-image)") from None
    getter = getattr(data, name, None)
    if getter is None or not callable(getter):
        raise ValueError(f"sample:{name}: scikit-image has no sample image {name!r} (try astronaut, coffee, "
                         "chelsea, rocket)")
    arr = getter()
    if arr.ndim != 3:
        raise ValueError(f"sample:{name} is not a colour photograph")
    return Image.fromarray(arr[..., :3]).convert("RGB")


class TinyGGProcessor(ProcessorMixin):
    """Tokenizer + image preprocessing for TinyGroundingGPT.

    Args:
        tokenizer: a Qwen2 tokenizer holding ``<image>``, ``<object>`` and the ChatML tokens.
        image_size: side of the square the towers see.
        num_image_tokens: tokens per ``<image>`` (the model's patch grid).
        object_tokens: tokens per ``<object>`` (the pooled grid).
    """

    tokenizer_class = "AutoTokenizer"

    def __init__(self, tokenizer=None, image_size: int = 336, num_image_tokens: int = 576,
                 object_tokens: int = 64, system_prompt: str = DEFAULT_SYSTEM, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        self.image_size = int(image_size)
        self.num_image_tokens = int(num_image_tokens)
        self.object_tokens = int(object_tokens)
        self.system_prompt = system_prompt
        self.image_token, self.object_token = IMAGE_TOKEN, OBJECT_TOKEN
        super().__init__(tokenizer, chat_template=chat_template or CHAT_TEMPLATE)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.object_token_id = tokenizer.convert_tokens_to_ids(OBJECT_TOKEN)
        if self.image_token_id == tokenizer.unk_token_id or self.image_token_id is None:
            raise ValueError("the tokenizer has no <image> token: add it with tinygg.tokenizer.add_multimodal_tokens")
        self._mean = np.asarray(CLIP_MEAN, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(CLIP_STD, dtype=np.float32).reshape(3, 1, 1)

    @classmethod
    def from_config(cls, tokenizer, config) -> TinyGGProcessor:
        """The processor matching a :class:`~tinygg.configuration.TinyGGConfig`."""
        return cls(tokenizer, image_size=config.image_size, num_image_tokens=config.num_image_tokens,
                   object_tokens=config.object_tokens)

    # ------------------------------------------------------------------ pictures
    def pad_to_square(self, image: Image.Image) -> Image.Image:
        side, ox, oy = square_geometry(*image.size)
        if image.size == (side, side):
            return image
        canvas = Image.new("RGB", (side, side), PAD_COLOR)
        canvas.paste(image, (ox, oy))
        return canvas

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        """PIL image -> (3, S, S) float32, padded to square, resized (bicubic), CLIP-normalised."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image; got {type(image).__name__}")
        sq = self.pad_to_square(image.convert("RGB")).resize((self.image_size, self.image_size),
                                                             Image.Resampling.BICUBIC)
        arr = np.asarray(sq, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (arr - self._mean) / self._std

    def crop_object(self, image: Image.Image, box: Sequence[float], where: str = "object box") -> Image.Image:
        """The crop of ``image`` by a pixel box ``[x1,y1,x2,y2]`` (validated against the image)."""
        x1, y1, x2, y2 = validate_pixel_box(box, image.width, image.height, where=where)
        left, top = int(np.floor(x1)), int(np.floor(y1))
        right, bottom = max(int(np.ceil(x2)), left + 1), max(int(np.ceil(y2)), top + 1)
        return image.crop((left, top, right, bottom))

    # ------------------------------------------------------------------ text
    def expand_placeholders(self, text: str) -> tuple[list[int], list[str]]:
        """Token ids of ``text`` with each placeholder expanded, and the placeholder kinds in order."""
        ids: list[int] = []
        kinds: list[str] = []
        for piece in _PLACEHOLDER.split(text):
            if piece == IMAGE_TOKEN:
                ids += [self.image_token_id] * self.num_image_tokens
                kinds.append("image")
            elif piece == OBJECT_TOKEN:
                ids += [self.object_token_id] * self.object_tokens
                kinds.append("object")
            elif piece:
                ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        return ids, kinds

    def pictures_for(self, kinds: list[str], images: Sequence[Image.Image], objects: Sequence[Sequence[float]],
                     where: str = "sample", check_only: bool = False) -> list[np.ndarray]:
        """The preprocessed picture of each placeholder, in order; counts are checked against the text."""
        n_img, n_obj = kinds.count("image"), kinds.count("object")
        if n_img != len(images):
            raise ValueError(f"{where}: the text has {n_img} {IMAGE_TOKEN} placeholder(s) but {len(images)} "
                             "image(s) were given")
        if n_obj != len(objects):
            raise ValueError(f"{where}: the text has {n_obj} {OBJECT_TOKEN} placeholder(s) but {len(objects)} "
                             "object box(es) were given")
        if n_obj and not images:
            raise ValueError(f"{where}: {OBJECT_TOKEN} needs an image to crop the object from")
        if check_only:
            return []
        img_iter, obj_iter = iter(images), iter(enumerate(objects))
        out = []
        for kind in kinds:
            if kind == "image":
                out.append(self.preprocess_image(next(img_iter)))
            else:
                k, box = next(obj_iter)
                out.append(self.preprocess_image(self.crop_object(images[0], box, where=f"{where}: objects[{k}]")))
        return out

    def format_chat(self, turns: Iterable[dict], add_generation_prompt: bool = False) -> str:
        """ChatML text of a conversation (LLaVA ``from``/``value`` or ``role``/``content`` turns)."""
        text = ""
        turns = list(turns)
        if not turns or _role(turns[0]) != "system":
            text += f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n"
        for t in turns:
            text += f"<|im_start|>{_role(t)}\n{_content(t)}<|im_end|>\n"
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return text

    def answer_separator(self) -> list[int]:
        """The template tokens between a user turn and the assistant's answer: ``<|im_end|>\\n<|im_start|>assistant\\n``."""
        pieces = ("<|im_end|>", "\n", "<|im_start|>assistant\n")  # as encode_conversation joins them
        return [i for p in pieces for i in self.tokenizer(p, add_special_tokens=False)["input_ids"]]

    def encode_conversation(self, turns: Sequence[dict], images: Sequence[Image.Image] = (),
                            objects: Sequence[Sequence[float]] = (), where: str = "sample",
                            with_pixels: bool = True, answer_gap: int | None = None) -> dict[str, Any]:
        """One training sample: ``input_ids``, ``labels`` (assistant turns only), ``pixel_values`` and the
        placeholder ``kinds`` ("image"/"object") in the order of the pixel rows.

        ``answer_gap`` (training curriculum, :class:`tinygg.train.config.TrainConfig` ``answer_gap_every``): where a
        user turn ends with ``<image>`` and an assistant turn follows, only the first ``answer_gap`` tokens of
        :meth:`answer_separator` are kept between them, so the answer starts that close to the image; a negative
        gap also leaves out the answer's first ``-answer_gap`` tokens (``[0.123,...`` at -2 becomes ``.123,...``,
        its first digit predicted right after the image); ``None`` (or the separator's length) is the full
        template."""
        ids: list[int] = []
        labels: list[int] = []
        kinds: list[str] = []
        turns = list(turns)
        tok = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]
        if not turns or _role(turns[0]) != "system":
            sys_ids = tok(f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n")
            ids += sys_ids
            labels += [IGNORE_INDEX] * len(sys_ids)
        end, nl = tok("<|im_end|>"), tok("\n")
        kept = [] if answer_gap is None else self.answer_separator()[:max(answer_gap, 0)]  # once, not per turn
        n_assistant = 0
        shortened = False  # the previous user turn ended at its image and was joined to this answer
        for i, t in enumerate(turns):
            role = _role(t, where=f"{where}: conversations[{i}]")
            content = _content(t, where=f"{where}: conversations[{i}]")
            head = [] if shortened else tok(f"<|im_start|>{role}\n")
            body, k = self.expand_placeholders(content)
            if shortened and answer_gap < 0:
                body = body[-answer_gap:]
            kinds += k
            shortened = (answer_gap is not None and role == "user" and content.rstrip().endswith(IMAGE_TOKEN)
                         and i + 1 < len(turns) and _role(turns[i + 1]) == "assistant")
            tail = kept if shortened else end + nl
            ids += head + body + tail
            if role == "assistant":
                n_assistant += 1
                labels += [IGNORE_INDEX] * len(head) + body + end + [IGNORE_INDEX] * len(nl)
            else:
                labels += [IGNORE_INDEX] * (len(head) + len(body) + len(tail))
        if n_assistant == 0:
            raise ValueError(f"{where}: conversations have no assistant ('gpt') turn to learn from")
        pictures = self.pictures_for(kinds, images, objects, where=where, check_only=not with_pixels)
        pixel_values = (np.stack(pictures) if pictures
                        else np.zeros((0, 3, self.image_size, self.image_size), dtype=np.float32))
        return {"input_ids": ids, "labels": labels, "pixel_values": pixel_values, "kinds": kinds}

    # ------------------------------------------------------------------ batch call
    def __call__(self, text: str | list[str] | None = None, images: Any = None, objects: Any = None,
                 return_tensors: str | None = "pt", padding: bool | str = True, padding_side: str | None = None,
                 **kwargs: Any) -> BatchFeature:
        """Tokenise prompts (already in chat format, or plain) with their images and object boxes.

        ``images``: per sample a PIL image, a list of them, or None (a flat list of images for a batch of
        one-image prompts works too). ``objects``: per sample a list of pixel boxes cropped from that
        sample's first image.
        """
        if text is None:
            raise ValueError("text is required")
        texts = [text] if isinstance(text, str) else list(text)
        per_images = _per_sample(images, len(texts), "images")
        per_objects = _per_sample(objects, len(texts), "objects", leaf_is_list=True)
        all_ids, pictures = [], []
        for b, t in enumerate(texts):
            ids, kinds = self.expand_placeholders(t)
            pictures += self.pictures_for(kinds, per_images[b], per_objects[b], where=f"sample {b}")
            all_ids.append(ids)
        side = padding_side or self.tokenizer.padding_side
        longest = max(len(x) for x in all_ids)
        pad_id = self.tokenizer.pad_token_id
        input_ids, attention = [], []
        for ids in all_ids:
            n = longest - len(ids) if padding else 0
            if side == "left":
                input_ids.append([pad_id] * n + ids)
                attention.append([0] * n + [1] * len(ids))
            else:
                input_ids.append(ids + [pad_id] * n)
                attention.append([1] * len(ids) + [0] * n)
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
        if pictures:
            data["pixel_values"] = np.stack(pictures)
        if return_tensors == "pt":
            data = {k: torch.tensor(np.asarray(v)) for k, v in data.items()}
        return BatchFeature(data=data)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


def _role(turn: dict, where: str = "turn") -> str:
    raw = turn.get("from", turn.get("role"))
    if raw not in ROLE_NAMES:
        raise ValueError(f"{where}: field 'from' must be one of {sorted(ROLE_NAMES)}; got {raw!r}")
    return ROLE_NAMES[raw]


def _content(turn: dict, where: str = "turn") -> str:
    value = turn.get("value", turn.get("content"))
    if isinstance(value, list):  # chat-template style parts
        parts = []
        for p in value:
            kind = p.get("type")
            parts.append(IMAGE_TOKEN + "\n" if kind == "image" else OBJECT_TOKEN if kind == "object"
                         else p.get("text", ""))
        value = "".join(parts)
    if not isinstance(value, str):
        raise ValueError(f"{where}: field 'value' must be text; got {type(value).__name__}")
    return value


def _per_sample(values: Any, n: int, name: str, leaf_is_list: bool = False) -> list[list]:
    """Normalise ``images`` / ``objects`` to one list per text sample."""
    if values is None:
        return [[] for _ in range(n)]
    if isinstance(values, Image.Image):
        values = [values]
    values = list(values)

    def is_leaf(v: Any) -> bool:  # one image, or one box of 4 numbers
        if leaf_is_list:
            return isinstance(v, (list, tuple, np.ndarray)) and len(v) == 4 and all(
                isinstance(x, (int, float, np.number)) for x in v)
        return isinstance(v, Image.Image)

    if n == 1 and all(is_leaf(v) for v in values):
        return [values]
    if not leaf_is_list and all(is_leaf(v) for v in values) and len(values) == n:
        return [[v] for v in values]
    if len(values) != n:
        raise ValueError(f"{name}: expected one entry per text ({n}); got {len(values)}")
    return [[v] if is_leaf(v) else list(v or []) for v in values]


__all__ = ["CHAT_TEMPLATE", "DEFAULT_SYSTEM", "IGNORE_INDEX", "TinyGGProcessor", "load_image",
           "placeholder_kinds"]
