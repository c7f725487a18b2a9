"""DiG rewards: the format reward and the Hungarian-matched F1 / mean-IoU accuracy rewards.

One scorer serves GRPO training (through TRL reward functions, :func:`make_reward_funcs`) and DiG
evaluation (:mod:`dig.evaluate`), so the metric a model is trained on and the metric it is judged by
cannot drift apart.

What is scored
--------------
A completion is a string or TRL's conversational form ``[{"role": "assistant", "content": ...}]``
(``content`` a string or a list of ``{"type": "text", "text": ...}`` parts). Its **answer** is the text
after the last ``</think>`` (thinking models); a ``<think>`` that is never closed leaves an empty answer.

Boxes are every ``[a,b,c,d]`` in the answer (:func:`tinygg.boxes.parse_boxes`), in one of three frames
chosen by :attr:`RewardConfig.box_format`:

* ``"norm"``: TinyGroundingGPT's floats in [0, 1], normalised to the image padded to a square;
* ``"qwen1000"``: Qwen-VL integers on a 0-1000 grid relative to the image (x over width, y over height);
* ``"pixel"``: pixels of the original image.

Ground-truth boxes arrive in pixels with the image size (a DiG pair record); they are moved into the
prediction's frame and both are scaled to a unit frame (``norm``: the padded square; the others:
image-relative), where L1 is computed. IoU and GIoU do not depend on that choice (they are invariant to
per-axis scaling). Swapped corners are put in order (:func:`tinygg.boxes.canonical`).

Format reward (binary)
----------------------
1.0 when the answer, after stripping whitespace and one surrounding markdown code fence, is a list of
boxes, and 0.0 otherwise. A list of boxes is either

* bare boxes ``[[x1,y1,x2,y2], ...]`` in the box grammar of :mod:`tinygg.boxes` (what TinyGG writes;
  numbers as ``parse_boxes`` reads them, so ``.5`` and ``+1`` count), with any whitespace between tokens;
* or a JSON list whose items are lists of 4 numbers or objects with exactly one of the keys ``bbox_2d``,
  ``bbox``, ``box`` holding one (Qwen-VL's JSON), and no other ``[a,b,c,d]`` anywhere in it (a label
  ``"[1,2,3,4]"`` would otherwise be read as a box);

with at most ``max_boxes`` boxes, and every coordinate finite and inside the frame (``[0, 1]``,
``[0, 1000]`` or the image's pixels; swapped corners are allowed). ``[]`` is a well-formed answer meaning
"no differences". Text around the list, a bare box that is not inside a list, or an unclosed thought all
score 0.

Accuracy (F1 and IoU)
---------------------
The first ``max_boxes`` predicted boxes are matched one-to-one to the M ground-truth boxes with the
Hungarian algorithm on the cost ``lambda_l1 * L1 - lambda_giou * GIoU`` (DETR's matcher without its
class term; L1 is the sum of the 4 absolute corner differences in the unit frame). A matched pair is a
hit when IoU >= ``tau`` (with a 1e-9 tolerance, so IoU equal to ``tau`` in exact arithmetic is a hit
whatever the float rounding). With n_m hits and N the number of **all** parsed boxes (uncapped):

* precision ``n_m / N`` and recall ``n_m / M``; an empty side scores 1 only if the other is empty too
  (N = 0 gives precision ``float(M == 0)``; M = 0 gives recall ``float(N == 0)``);
* ``F1 = 2PR / (P + R)``, 0 when P + R = 0;
* mean IoU, by :attr:`RewardConfig.iou_mode`: ``"matched"`` (default, the paper's "mean IoU of the
  matches") averages over the min(N, M) Hungarian pairs, hits or not; ``"gt"`` sums those IoUs over M
  (an unmatched GT box counts 0); ``"max"`` divides by max(N, M) (over-prediction also costs). With
  nothing to pair, IoU is 1 when N = M = 0 and 0 otherwise.

Reward-hacking guards: a duplicate box is matched at most once (one-to-one), so repeating a good box only
lowers precision; more than ``max_boxes`` boxes fails the format and every box counts in N (over-
prediction); an empty answer to an empty GT is perfect (1 on every component).

``total = w_format * format + w_f1 * F1 + w_iou * IoU``, in ``[0, w_format + w_f1 + w_iou]``. The paper's
reward ablation is :meth:`RewardConfig.ablation` (``format``, ``format+iou``, ``format+f1``, ``full``).

>>> cfg = RewardConfig()
>>> s = score_completion("[[0.000,0.125,0.500,0.625]]", [[0, 0, 320, 320]], (640, 480), cfg)
>>> s.format, s.f1, round(s.iou, 6), s.total
(1.0, 1.0, 1.0, 3.0)
>>> s = score_completion("[[0.000,0.125,0.500,0.625],[0.000,0.125,0.500,0.625]]",
...                      [[0, 0, 320, 320]], (640, 480), cfg)  # a duplicate is a false positive
>>> s.precision, s.recall, round(s.f1, 4), s.n_hit
(0.5, 1.0, 0.6667, 1)
>>> score_completion("[]", [], (640, 480), cfg).total  # nothing to find, nothing found
3.0
>>> score_completion("I see no box", [[0, 0, 10, 10]], (640, 480), cfg).total
0.0
"""

from __future__ import annotations

import array
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import chain, compress, islice, permutations, repeat
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from tinygg.boxes import BOX_PATTERN, box_iou_aligned, canonical, generalized_box_iou, pixel_to_square

logger = logging.getLogger(__name__)

BOX_FORMATS = ("norm", "qwen1000", "pixel")
IOU_MODES = ("matched", "gt", "max")
IOU_TOLERANCE = 1e-9
QWEN_GRID = 1000.0
JSON_BOX_KEYS = ("bbox_2d", "bbox", "box")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_BOX = re.sub(r"\((?!\?)", "(?:", BOX_PATTERN.pattern)  # the box grammar of tinygg.boxes, without groups
_BARE_LIST = re.compile(rf"\[\s*(?:{_BOX}(?:\s*,\s*{_BOX})*)?\s*\]")  # [[a,b,c,d], ...] or []
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)


# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class RewardConfig:
    """How completions are parsed, matched and weighted (see the module docstring for definitions)."""

    box_format: str = "norm"  # "norm" (TinyGG padded square, [0, 1]) | "qwen1000" (0-1000 grid) | "pixel"
    tau: float = 0.5  # IoU at or above which a matched pair is a hit
    lambda_l1: float = 5.0  # DETR's matcher weights
    lambda_giou: float = 2.0
    max_boxes: int = 10  # cap on N: more boxes fail the format; only the first max_boxes are matched
    iou_mode: str = "matched"  # "matched" | "gt" | "max": the denominator of the mean IoU
    w_format: float = 1.0
    w_f1: float = 1.0
    w_iou: float = 1.0
    accuracy_requires_format: bool = False  # True: F1 and IoU are 0 when the format reward is 0

    def __post_init__(self) -> None:
        if self.box_format not in BOX_FORMATS:
            raise ValueError(f"RewardConfig.box_format must be one of {BOX_FORMATS}; got {self.box_format!r}")
        if self.iou_mode not in IOU_MODES:
            raise ValueError(f"RewardConfig.iou_mode must be one of {IOU_MODES}; got {self.iou_mode!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"RewardConfig.tau must be in (0, 1]; got {self.tau}")
        if self.max_boxes < 1:
            raise ValueError(f"RewardConfig.max_boxes must be >= 1; got {self.max_boxes}")
        for name in ("lambda_l1", "lambda_giou", "w_format", "w_f1", "w_iou"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"RewardConfig.{name} must be a finite number >= 0; got {value}")

    @property
    def max_total(self) -> float:
        """The largest possible total reward."""
        return self.w_format + self.w_f1 + self.w_iou

    @property
    def weights(self) -> list[float]:
        """``[w_format, w_f1, w_iou]``: the order of :func:`make_reward_funcs`, for GRPOConfig.reward_weights."""
        return [self.w_format, self.w_f1, self.w_iou]

    @classmethod
    def ablation(cls, name: str, **overrides: Any) -> RewardConfig:
        """The reward variants of the DiG paper's Table 4.

        >>> RewardConfig.ablation("format+f1").weights
        [1.0, 1.0, 0.0]
        """
        table = {"format": (1.0, 0.0, 0.0), "format+iou": (1.0, 0.0, 1.0),
                 "format+f1": (1.0, 1.0, 0.0), "full": (1.0, 1.0, 1.0)}
        if name not in table:
            raise ValueError(f"unknown reward ablation {name!r}; choose one of {sorted(table)}")
        w_format, w_f1, w_iou = table[name]
        return replace(cls(**overrides), w_format=w_format, w_f1=w_f1, w_iou=w_iou)


# ---------------------------------------------------------------------------------------------- text


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or TRL's ``[{"role": "assistant", "content": ...}]``.

    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "[]"}]}])
    '[]'
    >>> completion_text(None)
    ''
    """
    if isinstance(completion, str):
        return completion
    if type(completion) is list and completion and type(completion[-1]) is dict and len(completion) == 1:
        return _content_text(completion[0].get("content"))  # TRL's usual [{"role": "assistant", ...}]
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        return "".join(_content_text(m.get("content")) for m in assistant)
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(p.get("text", "") if isinstance(p, Mapping) and isinstance(p.get("text", ""), str)
                       else (p if isinstance(p, str) else "") for p in content)
    return ""


def answer_text(text: str) -> str:
    """The answer part of a completion: after the last ``</think>``; empty inside an unclosed thought.

    >>> answer_text("<think>a [0,0,1,1]?</think> [[0.1,0.1,0.2,0.2]]")
    ' [[0.1,0.1,0.2,0.2]]'
    >>> answer_text("<think>still thinking [0,0,1,1]")
    ''
    """
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        return text[close + len(THINK_CLOSE):]
    return "" if THINK_OPEN in text else text


def _strip_fence(answer: str) -> str:
    stripped = answer.strip()
    if stripped.startswith("```"):
        m = _FENCE.match(stripped)
        if m:
            return m.group(1).strip()
    return stripped


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _json_box(item: Any) -> list[float] | None:
    if isinstance(item, Mapping):
        keys = [k for k in JSON_BOX_KEYS if k in item]
        if len(keys) != 1:
            return None
        item = item[keys[0]]
    if isinstance(item, list) and len(item) == 4 and all(_number(v) for v in item):
        return [float(v) for v in item]
    return None


def frame_extent(box_format: str, width: float, height: float) -> tuple[float, float]:
    """The largest x and y a box may have in ``box_format`` for a ``width x height`` image."""
    if box_format == "norm":
        return 1.0, 1.0
    if box_format == "qwen1000":
        return QWEN_GRID, QWEN_GRID
    if box_format == "pixel":
        return float(width), float(height)
    raise ValueError(f"box_format must be one of {BOX_FORMATS}; got {box_format!r}")


def format_reward(answer: str, cfg: RewardConfig, width: float, height: float) -> float:
    """1.0 if ``answer`` is a well-formed list of at most ``max_boxes`` in-frame boxes, else 0.0.

    >>> cfg = RewardConfig()
    >>> [format_reward(a, cfg, 640, 480) for a in ("[]", "[[0.1,0.2,0.3,0.4]]", "[0.1,0.2,0.3,0.4]",
    ...                                             "boxes: [[0.1,0.2,0.3,0.4]]", "[[0.1,0.2,0.3,1.4]]")]
    [1.0, 1.0, 0.0, 0.0, 0.0]
    >>> q = RewardConfig(box_format="qwen1000")
    >>> format_reward('```json\\n[{"bbox_2d": [10, 20, 300, 400], "label": "cube"}]\\n```', q, 640, 480)
    1.0
    """
    text = _strip_fence(answer)
    if not (text.startswith("[") and text.endswith("]")):
        return 0.0
    if _BARE_LIST.fullmatch(text):
        boxes = [[float(g) for g in m.groups()] for m in BOX_PATTERN.finditer(text)]
    else:
        try:
            items = json.loads(text)
            if not isinstance(items, list):
                return 0.0
            boxes = [_json_box(item) for item in items]
        except (ValueError, RecursionError, OverflowError):
            return 0.0
        # the JSON's boxes must be all the [a,b,c,d] of the text (a label "[1,2,3,4]" would parse as a box)
        if any(box is None for box in boxes) or len(BOX_PATTERN.findall(text)) != len(boxes):
            return 0.0
    if len(boxes) > cfg.max_boxes:
        return 0.0
    xmax, ymax = frame_extent(cfg.box_format, width, height)
    for x1, y1, x2, y2 in boxes:  # NaN and inf fail these comparisons
        if not (0.0 <= x1 <= xmax and 0.0 <= x2 <= xmax and 0.0 <= y1 <= ymax and 0.0 <= y2 <= ymax):
            return 0.0
    return 1.0


# ---------------------------------------------------------------------------------------------- frames


def image_size_of(value: Any, where: str = "image_size") -> tuple[int, int]:
    """``(width, height)`` from ``[W, H]``, ``(W, H)`` or ``{"width": W, "height": H}``; raises naming ``where``."""
    if isinstance(value, Mapping):
        value = (value.get("width"), value.get("height"))
    try:
        width, height = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected the image size as [width, height] or "
                         f"{{'width': W, 'height': H}}; got {value!r}") from None
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        raise ValueError(f"{where}: image size must be positive; got {width}x{height}")
    return int(width), int(height)


def gt_to_unit(gt_pixels: Any, width: int, height: int, box_format: str) -> np.ndarray:
    """Ground-truth pixel boxes (M, 4) -> the unit matching frame of ``box_format`` (M, 4), canonical.

    >>> gt_to_unit([[0, 0, 640, 480]], 640, 480, "norm").tolist()
    [[0.0, 0.125, 1.0, 0.875]]
    >>> gt_to_unit([[0, 0, 640, 480]], 640, 480, "qwen1000").tolist()
    [[0.0, 0.0, 1.0, 1.0]]
    """
    gt = np.asarray(gt_pixels, dtype=np.float64).reshape(-1, 4)
    if box_format == "norm":
        return canonical(pixel_to_square(gt, width, height))
    return canonical(gt / np.array([width, height, width, height], dtype=np.float64))


def pred_scale(box_format: str, width: float, height: float) -> np.ndarray:
    """What predicted coordinates are divided by to reach the unit frame: shape (4,)."""
    xmax, ymax = frame_extent(box_format, width, height)
    return np.array([xmax, ymax, xmax, ymax], dtype=np.float64)


def pred_to_unit(boxes: Any, width: int, height: int, box_format: str) -> np.ndarray:
    """Parsed predicted boxes (N, 4) in ``box_format`` -> the unit matching frame (N, 4), canonical."""
    return canonical(np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / pred_scale(box_format, width, height))


def unit_to_pixel(boxes: Any, width: int, height: int, box_format: str) -> np.ndarray:
    """Unit-frame boxes (N, 4) back to the image's pixels (for drawing), clipped to the image."""
    from tinygg.boxes import square_to_pixel

    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == "norm":
        return square_to_pixel(b, width, height)
    px = b * np.array([width, height, width, height], dtype=np.float64)
    return np.clip(px, 0, np.array([width, height, width, height], dtype=np.float64))


# ---------------------------------------------------------------------------------------------- scores


@dataclass
class SampleScore:
    """The reward components of one completion, and which boxes were matched."""

    format: float
    precision: float
    recall: float
    f1: float
    iou: float
    total: float
    n_pred: int  # all parsed boxes (uncapped)
    n_gt: int
    n_hit: int
    pred_idx: np.ndarray = field(repr=False)  # (K,) indices of matched predictions, K = min(N, cap, M)
    gt_idx: np.ndarray = field(repr=False)  # (K,) indices of their GT boxes
    pair_iou: np.ndarray = field(repr=False)  # (K,) IoU of each matched pair
    pred_unit: np.ndarray = field(repr=False)  # (min(N, max_boxes), 4) predictions in the unit frame
    tau: float = field(default=0.5, repr=False)

    @property
    def gt_hit(self) -> np.ndarray:
        """(M,) bool: GT boxes matched with IoU >= tau."""
        hit = np.zeros(self.n_gt, dtype=bool)
        hit[self.gt_idx[self.pair_iou >= self.tau - IOU_TOLERANCE]] = True
        return hit

    @property
    def gt_iou(self) -> np.ndarray:
        """(M,) IoU of each GT box with its matched prediction (0 when unmatched)."""
        out = np.zeros(self.n_gt)
        out[self.gt_idx] = self.pair_iou
        return out

    @property
    def pred_hit(self) -> np.ndarray:
        """(min(N, max_boxes),) bool: predictions matched with IoU >= tau."""
        hit = np.zeros(len(self.pred_unit), dtype=bool)
        hit[self.pred_idx[self.pair_iou >= self.tau - IOU_TOLERANCE]] = True
        return hit

    def components(self) -> dict[str, float]:
        return {"format": self.format, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "iou": self.iou, "total": self.total}


@dataclass
class BatchScores:
    """Reward components of a batch, arrays of shape (B,), and the matches as padded arrays."""

    format: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    iou: np.ndarray
    total: np.ndarray
    n_pred: np.ndarray  # (B,) all parsed boxes
    n_gt: np.ndarray  # (B,)
    n_hit: np.ndarray  # (B,)
    n_pairs: np.ndarray  # (B,) matched pairs K_i = min(N_i, cap, M_i)
    pair_pred: np.ndarray  # (B, K) prediction index of each pair, -1 past K_i
    pair_gt: np.ndarray  # (B, K) GT index of each pair, -1 past K_i
    pair_iou: np.ndarray  # (B, K) IoU of each pair, 0 past K_i
    n_used: np.ndarray  # (B,) min(N_i, cap)
    pred_unit: np.ndarray  # (B, N, 4) matched-against predictions in the unit frame
    tau: float

    def __len__(self) -> int:
        return len(self.total)

    def sample(self, i: int) -> SampleScore:
        k, n = int(self.n_pairs[i]), int(self.n_used[i])
        return SampleScore(float(self.format[i]), float(self.precision[i]), float(self.recall[i]),
                           float(self.f1[i]), float(self.iou[i]), float(self.total[i]), int(self.n_pred[i]),
                           int(self.n_gt[i]), int(self.n_hit[i]), self.pair_pred[i, :k].copy(),
                           self.pair_gt[i, :k].copy(), self.pair_iou[i, :k].copy(),
                           self.pred_unit[i, :n].copy(), tau=self.tau)


def score_completion(completion: Any, gt_boxes: Any, image_size: Any, cfg: RewardConfig) -> SampleScore:
    """Score one completion against pixel GT boxes of an image of ``image_size`` = (W, H)."""
    return score_batch([completion], [gt_boxes], [image_size], cfg).sample(0)


def score_batch(completions: Sequence[Any], gt_boxes: Sequence[Any], image_sizes: Sequence[Any],
                cfg: RewardConfig) -> BatchScores:
    """Score a batch of completions; ``gt_boxes[i]`` are pixel boxes (M_i, 4) of an image ``image_sizes[i]``.

    Text is read in a few passes over the joined answers (well-formed box lists through a fast path
    equivalent to the general parser, :func:`_read_predictions`); frames, the pairwise L1 / IoU / GIoU of
    every sample, the assignments (exhaustive search over all one-to-one maps, batched per problem shape,
    when that is small; scipy's Hungarian solver otherwise) and the metrics run on arrays for the whole
    batch, large ones in cache-sized pieces.

    >>> s = score_batch(["[[0.1,0.1,0.5,0.5]]", "nothing", "nothing"], [[[64, 64, 320, 320]], [[0, 0, 9, 9]], []],
    ...                 [(640, 640)] * 3, RewardConfig())
    >>> s.format.tolist(), s.f1.tolist(), s.total.tolist()  # no box for an empty GT is right, in a bad format
    ([1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [3.0, 0.0, 2.0])
    """
    b = len(completions)
    if not len(gt_boxes) == b == len(image_sizes):
        raise ValueError(f"score_batch needs one GT list and one image size per completion; got "
                         f"{b} completions, {len(gt_boxes)} GT lists, {len(image_sizes)} sizes")
    sizes = _sizes_array(image_sizes)  # (B, 2) width, height
    texts = [c if type(c) is str else completion_text(c) for c in completions]
    answers = [answer_text(t).strip() if "think>" in t else t.strip() for t in texts]
    fmt, pred_rows, pred_of = _read_predictions(answers, sizes, cfg)  # (B,), (T, 4) unit frame, (T,)
    gt_rows, n_gt = _read_gt(gt_boxes, sizes, cfg)  # (G, 4) unit frame, (B,)

    n_pred = np.bincount(pred_of, minlength=b)  # (B,)
    start = np.cumsum(n_pred) - n_pred
    rank = np.arange(len(pred_of)) - start[pred_of]  # position of each box within its sample
    keep = rank < cfg.max_boxes
    n_used = np.minimum(n_pred, cfg.max_boxes)
    used_rows = pred_rows[keep] if len(keep) and not keep.all() else pred_rows  # (sum n_used, 4)
    preds = np.zeros((b, max(int(n_used.max(initial=0)), 1), 4))  # (B, N, 4)
    preds[pred_of[keep], rank[keep]] = used_rows

    n_pairs = np.minimum(n_used, n_gt)
    pair_pred, pair_gt, pair_iou = _match(used_rows, n_used, gt_rows, n_gt, cfg)  # (B, K) each, -1 / 0 past n_pairs
    valid = pair_pred >= 0
    n_hit = (valid & (pair_iou >= cfg.tau - IOU_TOLERANCE)).sum(1)
    iou_sum = pair_iou.sum(1)

    precision = np.where(n_pred > 0, n_hit / np.maximum(n_pred, 1), (n_gt == 0).astype(float))
    recall = np.where(n_gt > 0, n_hit / np.maximum(n_gt, 1), (n_pred == 0).astype(float))
    pr = precision + recall
    f1 = np.where(pr > 0, 2 * precision * recall / np.where(pr > 0, pr, 1.0), 0.0)
    denom = {"matched": n_pairs, "gt": n_gt, "max": np.maximum(n_pred, n_gt)}[cfg.iou_mode]
    both_empty = (n_pred == 0) & (n_gt == 0)
    mean_iou = np.where(denom > 0, iou_sum / np.maximum(denom, 1), both_empty.astype(float))
    if cfg.accuracy_requires_format:
        f1, mean_iou = f1 * fmt, mean_iou * fmt
    total = cfg.w_format * fmt + cfg.w_f1 * f1 + cfg.w_iou * mean_iou
    return BatchScores(fmt, precision, recall, f1, mean_iou, total, n_pred, n_gt, n_hit, n_pairs, pair_pred,
                       pair_gt, pair_iou, n_used, preds, cfg.tau)


# ---------------------------------------------------------------------------------------------- batch input


_ASCII_SPACE = b" \t\n\r\x0b\x0c"
_SKELETON_DELETE = b"0123456789.+-eE" + _ASCII_SPACE  # what a box list keeps is its brackets and commas
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]\x00", b"  ,")
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_NOT_DIGITS = b".+-eE" + _ASCII_SPACE  # what translate deletes to leave a box list's digit runs and separators


def _bigrams(classes: dict[bytes, int], bad: list[bytes]) -> tuple[bytes, int, bytes]:
    """Tables for :func:`_has_bigram`: byte -> class (for ``bytes.translate``), the number of classes, and
    pair code -> 1 if the pair is forbidden."""
    table = bytearray(256)
    for chars, cls in classes.items():
        for ch in chars:
            table[ch] = cls
    k = max(classes.values()) + 1
    forbidden = bytearray(256)
    for pair in bad:
        forbidden[table[pair[0]] * k + table[pair[1]]] = 1
    return bytes(table), k, bytes(forbidden)


def _has_bigram(data: bytes, bigrams: tuple[bytes, int, bytes]) -> bool:
    """Whether two adjacent bytes of ``data`` form a forbidden pair (one vectorised pass, however many pairs)."""
    table, k, forbidden = bigrams
    codes = np.frombuffer(data.translate(table), dtype=np.uint8)
    return b"\x01" in (codes[:-1] * k + codes[1:]).tobytes().translate(forbidden)


def _bigram_positions(data: bytes, bigrams: tuple[bytes, int, bytes]) -> np.ndarray:
    """Where in ``data`` a forbidden pair of adjacent bytes starts (usually nowhere: then one quick pass)."""
    table, k, forbidden = bigrams
    codes = np.frombuffer(data.translate(table), dtype=np.uint8)
    flags = (codes[:-1] * k + codes[1:]).tobytes().translate(forbidden)
    if b"\x01" not in flags:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.frombuffer(flags, dtype=np.uint8))


# in a box list's digit runs and separators ("[[0,0,0,0],[0,0,0,0]]"): a digit outside the boxes, a slot without one
_STRUCTURE = _bigrams({b"0": 1, b"[": 2, b"]": 3, b",": 4}, [b"0[", b"]0", b"[,", b",,", b",]"])


# whitespace inside a number that numpy's integer parser skips: "- 5", and once the point is dropped ". 5", "5 ."
_SPACING = _bigrams({_ASCII_SPACE: 1, b".": 2, b"+-": 3}, [b"- ", b"+ ", b". ", b" .", b".-", b".+"])




def _list_skeleton(n: int) -> bytes:
    """What a list of ``n`` bare boxes keeps once numbers and ASCII whitespace are deleted: ``[[,,,],[,,,]]``."""
    return b"[" + b",".join([b"[,,,]"] * n) + b"]"


_SKELETON_N = {_list_skeleton(n): n for n in range(257)}  # skeleton -> box count; longer lists: slow path


def _sizes_array(image_sizes: Sequence[Any]) -> np.ndarray:
    """(B, 2) float array of (width, height); every entry validated by :func:`image_size_of`."""
    try:
        shaped = set(map(len, image_sizes)) <= {2} and not set(map(type, image_sizes)) & {str, bytes}
        arr = _float_array(chain.from_iterable(image_sizes), 2 * len(image_sizes)).reshape(-1, 2) if shaped else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (len(image_sizes), 2) or not (np.isfinite(arr).all() and (arr > 0).all()):
        arr = np.array([image_size_of(s, where=f"image_size[{i}]") for i, s in enumerate(image_sizes)],
                       dtype=np.float64).reshape(-1, 2)
    return np.floor(arr)


def _float_array(numbers: Iterable[Any], count: int) -> np.ndarray:
    """``count`` numbers as a float64 array (each read with ``float``'s rules, as ``np.fromiter`` reads it).

    ``array.array`` converts plain ints (pixel boxes of DiG pair records) and floats about twice as fast as
    ``np.fromiter``; anything it refuses (a numeric string, None) is left to numpy, which raises or reads
    it as before.
    """
    items = list(numbers)
    if len(items) != count:
        raise ValueError(f"expected {count} numbers, got {len(items)}")
    try:  # int64 -> float64 rounds as float(int) does
        return np.frombuffer(array.array("q", items), dtype=np.int64).astype(np.float64)
    except (TypeError, OverflowError):  # a float (or an int beyond 64 bits)
        pass
    try:
        return np.frombuffer(array.array("d", items), dtype=np.float64)
    except TypeError:
        return np.fromiter(items, dtype=np.float64, count=count)


def _read_predictions(answers: Sequence[str], sizes: np.ndarray,
                      cfg: RewardConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Format reward (B,), every parsed finite box in the unit frame (T, 4), and each box's sample (T,), of
    answers stripped of surrounding whitespace (which changes neither).

    Equal to :func:`format_reward` and :func:`tinygg.boxes.parse_boxes` on every answer (tests check it),
    in fewer steps: a fenced-or-bare list of bare boxes whose slots all read as numbers (what a trained
    model writes) is recognised by its skeleton (``bytes.translate`` over many answers at once, then a
    dict look-up) and by its numbers reading as such (:func:`_floats`, the numbers of thousands of lists
    in one parser call); the format's count and range checks then run on arrays. Other answers go through
    :func:`format_reward` and have their boxes read in one pass over all of them (:func:`_slow_boxes`).
    """
    b = len(answers)
    stripped, skeletons = [], []  # answers without a fence, and what a box list keeps of them
    for lo in range(0, b, _LISTS_AT_ONCE):  # a few hundred kB of text at a time: the buffers stay in cache
        part = answers[lo:lo + _LISTS_AT_ONCE]
        buffer = "\x00".join(part).encode("utf-8", "replace")  # NUL-separated: each step is one pass
        if b"`" in buffer and b"```" in buffer:
            part = [_strip_fence(t) if t[:3] == "```" else t for t in part]
            buffer = "\x00".join(part).encode("utf-8", "replace")
        stripped.extend(part)
        if buffer.count(b"\x00") == len(part) - 1:
            skeletons.extend(buffer.translate(None, _SKELETON_DELETE).split(b"\x00"))
        else:  # an answer holds a NUL byte: cut them one by one
            skeletons.extend(t.encode("utf-8", "replace").translate(None, _SKELETON_DELETE) for t in part)
    n_boxes = np.fromiter(map(_SKELETON_N.get, skeletons, repeat(-1)), dtype=np.int64, count=b)  # -1: no list
    # "[]" must hold nothing but whitespace ("[5]" has the skeleton of an empty list); a longer list with a
    # number outside its boxes ("[5[1,2,3,4]]", "[[1,2,3,4]]5") or an empty slot is unreadable to _floats
    for i in np.flatnonzero(n_boxes == 0).tolist():
        if stripped[i] != "[]" and stripped[i].encode("ascii", "replace").translate(None, _ASCII_SPACE) != b"[]":
            n_boxes[i] = -1
    listed = np.flatnonzero(n_boxes > 0)  # (L,) answers whose numbers are read in one pass
    vals, unreadable = _floats(list(compress(stripped, (n_boxes > 0).tolist())), n_boxes[listed])
    fast = n_boxes >= 0  # (B,)
    if len(unreadable):  # a slot that is not one number ("[[1..2,3,4,5]]"): those answers take the slow path
        fast[listed[unreadable]] = False
        vals = vals.reshape(-1, 4)[np.repeat(~np.isin(np.arange(len(listed)), unreadable), n_boxes[listed])]
    fast_idx = np.flatnonzero(fast)
    fast_n = n_boxes[fast_idx]
    fast_rows = vals.reshape(-1, 4)  # (T_fast, 4) prediction frame
    fast_of = np.repeat(fast_idx, fast_n)

    per_image = cfg.box_format == "pixel"
    scale = sizes[:, [0, 1, 0, 1]] if per_image else pred_scale(cfg.box_format, 1, 1)  # (B, 4) or (4,): divisor
    fmt = np.zeros(b)
    if len(fast_idx):  # NaN and inf fail one of the comparisons
        frame = scale[fast_of] if per_image else scale
        outside = np.flatnonzero(~(_all4(fast_rows >= 0) & _all4(fast_rows <= frame)))
        bad = np.bincount(fast_of[outside], minlength=b)[fast_idx]
        fmt[fast_idx] = ((bad == 0) & (fast_n <= cfg.max_boxes)).astype(float)
        infinite = outside[~np.isfinite(fast_rows[outside]).all(1)]
        if len(infinite):  # parse_boxes drops non-finite boxes
            fast_rows, fast_of = np.delete(fast_rows, infinite, axis=0), np.delete(fast_of, infinite)

    slow_idx = np.flatnonzero(~fast).tolist()
    for i in slow_idx:
        if stripped[i][:1] == "[" and stripped[i][-1:] == "]":  # else format_reward says 0 at once
            fmt[i] = format_reward(answers[i], cfg, float(sizes[i, 0]), float(sizes[i, 1]))
    slow_rows, slow_n = _slow_boxes([answers[i] for i in slow_idx])
    slow_of = np.repeat(np.asarray(slow_idx, dtype=np.int64), slow_n)
    finite = np.isfinite(slow_rows).all(1)
    slow_rows, slow_of = slow_rows[finite], slow_of[finite]

    if len(slow_of):
        rows = np.concatenate([fast_rows, slow_rows])
        of = np.concatenate([fast_of, slow_of])
        order = np.argsort(of, kind="stable")  # sample by sample, boxes in text order (two sorted runs)
        rows, of = rows[order], of[order]
    else:
        rows, of = fast_rows, fast_of
    if per_image:
        rows = rows / scale[of]
    elif cfg.box_format != "norm":
        rows = rows / scale
    return fmt, canonical(rows).reshape(-1, 4), of


def _all4(flags: np.ndarray) -> np.ndarray:
    """``flags.all(1)`` of a C-contiguous (N, 4) bool array, reading each row as one 32-bit word."""
    return flags.view(np.uint32)[:, 0] == np.frombuffer(b"\x01\x01\x01\x01", dtype=np.uint32)[0]


_BOX_ALONE = re.compile(_BOX)  # a box, as one string
_BRACKETED_OR_NUL = re.compile(r"\[[\s\d.,+eE-]*\]|\x00")  # brackets around what a box may hold, or an end
_ODD_SPACES = "\x1c\x1d\x1e\x1f"  # ASCII that \s matches (and float strips) but numpy's parsers do not


def _slow_boxes(answers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    r"""Every ``[a,b,c,d]`` of each answer, read as :func:`tinygg.boxes.parse_boxes` reads them (non-finite
    boxes included): (T, 4) values and (len(answers),) counts.

    One pass of a simple regex over all answers finds every bracketed run of the characters a box may
    hold (each box of the box regex is one of them, and no box of it starts inside one): those whose
    skeleton is ``[,,,]`` and whose four slots read as numbers are the boxes, since on ASCII text ``float``
    reads exactly the slots the box grammar accepts. Their numbers are read together by :func:`_floats`.
    Text with other scripts' digits or spaces (which ``\d`` and ``\s`` match) goes through the box regex.
    """
    text = "\x00".join(answers)
    if "[" not in text:
        return np.zeros((0, 4)), np.zeros(len(answers), dtype=np.int64)
    if text.count("\x00") == len(answers) - 1:
        found = _BRACKETED_OR_NUL.findall(text)  # strings (no per-match tuples for the garbage collector)
        is_run = np.fromiter(map(len, found), dtype=np.int64, count=len(found)) > 1
        runs = list(compress(found, is_run.tolist()))
        joined = "\x00".join(runs)
        if joined.isascii() and not any(c in joined for c in _ODD_SPACES):
            answer_of = np.cumsum(~is_run)[is_run]  # (R,) the answer of each run: the ends before it
            skeletons = joined.encode("ascii").translate(None, _SKELETON_DELETE).split(b"\x00")
            four = np.flatnonzero(np.fromiter(map(_FOUR_SLOTS.__eq__, skeletons), dtype=bool, count=len(runs)))
            values, bad = _floats([runs[i] for i in four], np.ones(len(four), dtype=np.int64))
            good = np.ones(len(four), dtype=bool)
            good[bad] = False  # a slot that is not a number ("[1,2,3,4e]"): not a box
            return values.reshape(-1, 4)[good], np.bincount(answer_of[four[good]], minlength=len(answers))
    found = [_BOX_ALONE.findall(a) for a in answers]
    counts = np.fromiter(map(len, found), dtype=np.int64, count=len(answers))
    numbers = [float(v) for box in chain.from_iterable(found) for v in BOX_PATTERN.fullmatch(box).groups()]
    return np.array(numbers, dtype=np.float64).reshape(-1, 4), counts


_FOUR_SLOTS = _list_skeleton(1)[1:-1]  # b"[,,,]"
_POWERS_OF_TEN = np.array([float(10 ** k) for k in range(23)])  # exact in float64
_SIGN_POINT_COMMA = bytes(c if c in b"-.," else 0 for c in range(256))  # translate: other bytes to NUL


def _plain_decimals(text: bytes, total: int) -> np.ndarray | None:
    """The ``total`` comma-separated numbers of ``text`` (each holding a digit) as ``float`` reads them, if
    every one is a plain decimal (``[-+]?`` digits with at most one ``.``, ASCII whitespace around, at most
    2 ** 53 once the point is dropped and at most 22 digits after it); else None.

    Each number is read as an integer without its point (numpy's integer parser is several times faster
    than its float parser) and divided by 10 ** (digits after the point): both are exact in float64, so the
    division's correct rounding is ``float``'s correctly rounded result. Anything else (an exponent, a
    second point, a space inside a number) reads short or is caught below, and the caller falls back to the
    float parser.
    """
    if _has_bigram(text, _SPACING):
        return None  # the integer parser would take "- 5" or (without the point) ". 5", "5 ." or ".-5" as numbers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "could not be read to its end": a short count
        try:
            mantissa = np.fromstring(text.translate(None, b".") + b",0", dtype=np.int64, sep=",")
        except ValueError:
            return None
    if len(mantissa) != total + 1:
        return None
    mantissa = mantissa[:total]
    if (np.abs(mantissa) > 2 ** 53).any():  # not exact in float64 (or beyond int64, where strtoll saturates)
        return None
    # "-", "." and "," (each slot now ends with one) in the text without whitespace; other bytes read 0
    marks = np.frombuffer((text + b",").translate(_SIGN_POINT_COMMA, _ASCII_SPACE), dtype=np.uint8)
    events = np.flatnonzero(marks)  # (E,) in order
    kinds = marks[events]  # 45 "-", 46 ".", 44 ","
    is_comma = kinds == 44
    slot = np.cumsum(is_comma) - is_comma  # (E,) the slot of each event
    point = np.flatnonzero(kinds == 46)
    if len(point):
        if not is_comma[point + 1].all():  # a second point ("0.50.5" reads as the integer 0505)
            return None
        decimals = np.zeros(total, dtype=np.int64)
        decimals[slot[point]] = events[point + 1] - events[point] - 1  # digits between the point and the comma
        if decimals.max() >= len(_POWERS_OF_TEN):
            return None
        values = mantissa / _POWERS_OF_TEN[decimals]
    else:
        values = mantissa.astype(np.float64)
    minus = slot[kinds == 45]  # slots written with "-": "-0" and "-0.0" are -0.0
    values[minus] = -np.abs(values[minus])
    return values


_LISTS_AT_ONCE = 2048  # box lists read in one piece (a few hundred kB of text: the buffers stay in cache)


def _floats(lists: list[str], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All numbers of box lists whose skeleton is right (``counts[j]`` boxes, so ``4 * counts[j]`` slots,
    in ``lists[j]``), each slot read as ``float`` reads it: (4 * sum(counts),) values, and the indices of
    the lists with a slot that is not one number (their values are meaningless). Read ``_LISTS_AT_ONCE``
    lists at a time by :func:`_floats_joined`.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if len(lists) <= _LISTS_AT_ONCE:
        return _floats_joined(lists, counts)
    values, bad = [], []
    for lo in range(0, len(lists), _LISTS_AT_ONCE):
        part_values, part_bad = _floats_joined(lists[lo:lo + _LISTS_AT_ONCE], counts[lo:lo + _LISTS_AT_ONCE])
        values.append(part_values)
        bad.append(part_bad + lo)
    return np.concatenate(values), np.concatenate(bad)


def _floats_joined(lists: list[str], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_floats` on lists joined into one text.

    A list with a digit next to a bracket outside its boxes ("[5[1,2,3,4]]", "[[,1,2,3]5]") or a slot without
    a digit (which numpy's parsers would read as a number) is unreadable; then brackets read as spaces.
    Plain decimals are read at once by :func:`_plain_decimals`; otherwise numpy's C float parser reads the
    joined slots in one call; it stops at the first slot that is not a whole number (what it cannot read of
    a slot must be a separator), which shows as a short count; only then are the slots from that list on
    read one by one with ``float``, restarting after each bad list.
    """
    ends = np.cumsum(counts * 4)  # (L,) end of each list's numbers
    total = int(ends[-1]) if len(ends) else 0
    if not total:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    joined = "\x00".join(lists).encode("ascii")  # skeletons are ASCII
    runs = joined.translate(_DIGITS_TO_ZERO, _NOT_DIGITS)  # "[[0,0,0,0]]\x00[[0,0,0,0],[0,0,0,0]]..."
    odd = _bigram_positions(runs, _STRUCTURE)  # "5[[", "]5,", "[[,1,2,3]]"
    if len(odd):
        outside = np.unique(np.searchsorted(np.flatnonzero(np.frombuffer(runs, dtype=np.uint8) == 0), odd))
        inside = np.setdiff1d(np.arange(len(lists)), outside)
        part_values, part_bad = _floats_joined([lists[j] for j in inside], counts[inside])
        out = np.full(total, math.nan)
        keep = np.repeat(np.isin(np.arange(len(lists)), inside), 4 * counts)
        out[keep] = part_values
        return out, np.union1d(outside, inside[part_bad])
    text = joined.translate(_BRACKETS_TO_SPACES)  # and the NULs between lists to ","
    values = _plain_decimals(text, total)
    if values is not None:
        return values, np.zeros(0, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "could not be read to its end": a short count
        try:  # the sentinel ",0" makes a bad last slot ("0.50.5": read as 0.50) stop short of the end too
            values = np.fromstring(text + b",0", dtype=np.float64, sep=",")
        except ValueError:
            values = np.zeros(0)
    if len(values) == total + 1:
        return values[:total], np.zeros(0, dtype=np.int64)
    # every list before the one of the last value read was read whole, by the same rules as float's
    first = int(np.searchsorted(ends, max(len(values) - 1, 0), side="right"))
    done = int(ends[first - 1]) if first else 0
    tokens = text.decode("ascii").split(",")
    if len(tokens) != total:  # pragma: no cover - the skeleton check guarantees 4 slots per box
        raise AssertionError(f"expected {total} numbers in the box lists, found {len(tokens)}")
    out: list[float] = values[:done].tolist()
    bad: list[int] = []
    while len(out) < total:
        try:
            out.extend(map(float, islice(tokens, len(out), None)))
        except ValueError:  # ``out`` holds everything read before the bad slot
            j = int(np.searchsorted(ends, len(out), side="right"))
            bad.append(j)
            out.extend([math.nan] * (int(ends[j]) - len(out)))
    return np.asarray(out, dtype=np.float64), np.asarray(bad, dtype=np.int64)


def _read_gt(gt_boxes: Sequence[Any], sizes: np.ndarray, cfg: RewardConfig) -> tuple[np.ndarray, np.ndarray]:
    """GT pixel boxes of every sample -> (G, 4) rows in the unit frame (canonical) and counts (B,)."""
    try:
        lists = gt_boxes
        n_gt = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    except TypeError:  # None for a sample without GT boxes
        lists = [() if g is None else g for g in gt_boxes]
        n_gt = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    try:
        boxes = list(chain.from_iterable(lists))
        good = set(map(len, boxes)) <= {4} and not set(map(type, boxes)) & {str, bytes}
        rows = _float_array(chain.from_iterable(boxes), 4 * len(boxes)).reshape(-1, 4) if good else None
        good = good and bool(np.isfinite(rows).all())
    except (TypeError, ValueError):
        good = False
    if not good:
        for i, g in enumerate(lists):
            try:
                arr = np.asarray(g, dtype=np.float64)
            except (TypeError, ValueError):
                arr = None
            if (arr is None or (arr.size and (arr.ndim != 2 or arr.shape[1] != 4)) or not np.isfinite(arr).all()
                    or any(isinstance(box, (str, bytes)) for box in g)):
                raise ValueError(f"boxes[{i}]: expected a list of [x1,y1,x2,y2] pixel boxes (finite numbers); "
                                 f"got {g!r}")
        raise ValueError("GT boxes: expected one list of [x1,y1,x2,y2] pixel boxes per sample")  # pragma: no cover
    of = np.repeat(np.arange(len(lists)), n_gt)
    if cfg.box_format == "norm":  # one conversion per distinct image size
        distinct, size_of = np.unique(sizes[:, 0] * 1e6 + sizes[:, 1], return_inverse=True)  # (U,), (B,)
        if len(distinct) == 1:
            rows = pixel_to_square(rows, int(sizes[0, 0]), int(sizes[0, 1]))
        else:
            out = np.empty_like(rows)
            code = size_of[of]  # (G,) the size of each box's image
            for u in range(len(distinct)):
                sel = code == u
                w, h = sizes[np.argmax(size_of == u)]
                out[sel] = pixel_to_square(rows[sel], int(w), int(h))
            rows = out
    else:
        rows = rows / sizes[of][:, [0, 1, 0, 1]]
    return canonical(rows).reshape(-1, 4), n_gt


# ---------------------------------------------------------------------------------------------- matching


_CHUNK = 8192  # candidate pairs whose cost is computed at once (its temporaries stay in cache, not paged in)
MAX_EXHAUSTIVE = 120  # most one-to-one maps searched exhaustively (e.g. 3 into 6); scipy per sample beyond


@lru_cache(maxsize=256)
def _injections(r: int, c: int) -> np.ndarray | None:
    """Every one-to-one map of ``r`` rows into ``c >= r`` columns, shape (P, r), or None if P is too big."""
    if math.perm(c, r) > MAX_EXHAUSTIVE:
        return None
    return np.array(list(permutations(range(c), r)), dtype=np.int64).reshape(-1, r)


def _match(preds: np.ndarray, n_used: np.ndarray, gts: np.ndarray, n_gt: np.ndarray,
           cfg: RewardConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching of every sample: preds (sum n_used, 4) and gts (sum n_gt, 4) in the
    unit frame, sample by sample -> prediction index, GT index and IoU of each pair, (B, K) each (-1, -1, 0
    past a sample's pairs).

    L1 and GIoU are computed once for every (prediction, GT) pair of the batch, without padding, in
    cache-sized pieces of coordinates gathered column by column (the box functions then read contiguous
    memory, and the temporaries are reused rather than paged in); IoU only for the matched pairs.
    Samples are then grouped by problem shape (n, m); a group's problems are solved together by evaluating
    every one-to-one map (a handful when boxes are few), or one by one with scipy's Hungarian solver when
    there are more than ``MAX_EXHAUSTIVE`` maps. Both find the optimum.
    """
    b = len(n_used)
    k = np.minimum(n_used, n_gt)
    width = max(int(k.max(initial=0)), 1)
    pair_pred = np.full((b, width), -1, dtype=np.int64)
    pair_gt = np.full((b, width), -1, dtype=np.int64)
    pair_iou = np.zeros((b, width))
    active = np.flatnonzero(k > 0)
    if not len(active):
        return pair_pred, pair_gt, pair_iou

    pred_start, gt_start = np.cumsum(n_used) - n_used, np.cumsum(n_gt) - n_gt  # (B,) first row of each sample
    per = n_used[active] * n_gt[active]  # (A,) candidate pairs of each active sample, row-major (pred, GT)
    cand_end = np.cumsum(per)
    cand_start = cand_end - per
    pred_cols, gt_cols = preds.T.copy(), gts.T.copy()  # (4, T), (4, G)
    cost_flat = np.empty(int(cand_end[-1]))  # (P,)
    for lo in range(0, len(cost_flat), _CHUNK):
        cand = np.arange(lo, min(lo + _CHUNK, len(cost_flat)))  # (chunk,) candidates
        at = np.searchsorted(cand_end, cand, side="right")  # (chunk,) their active sample
        row, col = np.divmod(cand - cand_start[at], n_gt[active[at]])  # prediction and GT index in the sample
        p = np.take(pred_cols, pred_start[active[at]] + row, axis=1)  # (4, chunk), each coordinate contiguous
        g = np.take(gt_cols, gt_start[active[at]] + col, axis=1)
        cost_flat[lo:lo + _CHUNK] = (cfg.lambda_l1 * np.abs(p - g).sum(0)
                                     - cfg.lambda_giou * generalized_box_iou(p.T[:, None], g.T[:, None])[:, 0, 0])

    n_a, m_a = n_used[active], n_gt[active]
    shapes = n_a * (int(m_a.max()) + 1) + m_a
    for key in np.unique(shapes):
        sel = np.flatnonzero(shapes == key)
        idx = active[sel]
        n, m = int(n_a[sel[0]]), int(m_a[sel[0]])
        cost = cost_flat[cand_start[sel][:, None] + np.arange(n * m)].reshape(-1, n, m)  # (G, n, m)
        flip = n > m
        if flip:
            cost = cost.transpose(0, 2, 1)  # rows are now the smaller side
        r, c = cost.shape[1], cost.shape[2]
        maps = _injections(r, c)
        if maps is None:
            cols = np.stack([linear_sum_assignment(cost[j])[1] for j in range(len(idx))])
        else:
            cols = np.empty((len(idx), r), dtype=np.int64)
            flat = np.ascontiguousarray(cost).reshape(len(idx), r * c)  # (G, r * c)
            cells = np.arange(r) * c + maps  # (P, r): the cell of each row under each map
            step = max(1, 16 * _CHUNK // (len(maps) * r))  # problems evaluated at once: (step, P, r) stays small
            for s in range(0, len(idx), step):
                totals = flat[s:s + step][:, cells].sum(-1)  # (g, P)
                cols[s:s + step] = maps[np.argmin(totals, axis=1)]
        rows = np.broadcast_to(np.arange(r), cols.shape)
        pred, gt = (cols, rows) if flip else (rows, cols)
        if flip:  # report pairs in prediction order
            order = np.argsort(pred, axis=1)
            pred, gt = np.take_along_axis(pred, order, 1), np.take_along_axis(gt, order, 1)
        pair_pred[idx, :r], pair_gt[idx, :r] = pred, gt
    at, slot = np.nonzero(pair_pred >= 0)  # (K_total,) each matched pair
    pair_iou[at, slot] = box_iou_aligned(np.take(pred_cols, pred_start[at] + pair_pred[at, slot], axis=1).T,
                                         np.take(gt_cols, gt_start[at] + pair_gt[at, slot], axis=1).T)
    return pair_pred, pair_gt, pair_iou


# ---------------------------------------------------------------------------------------------- TRL


COMPONENTS = ("format", "f1", "iou")


class DigReward:
    """TRL reward functions for DiG, one per component, sharing one scoring pass per batch.

    TRL's GRPOTrainer calls every reward function as ``f(prompts=..., completions=..., completion_ids=...,
    **columns)`` where ``columns`` are the dataset's other columns, one value per completion, and logs each
    function's mean and std as ``rewards/<name>/mean``; ``GRPOConfig.reward_weights`` weights them. So
    ``funcs, weights = make_reward_funcs(cfg)`` trains on ``total`` while format, F1 and IoU are logged
    separately. Precision, recall and box counts go to TRL's ``log_metric`` hook (``dig/...``) when present.
    """

    def __init__(self, cfg: RewardConfig, boxes_key: str = "boxes", size_key: str = "image_size") -> None:
        self.cfg, self.boxes_key, self.size_key = cfg, boxes_key, size_key
        self._last_key: tuple | None = None
        self._last: BatchScores | None = None

    def sizes_from(self, columns: Mapping[str, Any]) -> list[Any]:
        """Each example's (width, height): the ``size_key`` column, else ``width`` and ``height`` (pair records)."""
        if self.size_key in columns:
            return list(columns[self.size_key])
        if "width" in columns and "height" in columns:
            return [(w, h) for w, h in zip(columns["width"], columns["height"])]
        raise ValueError(f"DiG reward needs each example's image size: a dataset column {self.size_key!r} "
                         f"([width, height]) or columns 'width' and 'height'; got columns {sorted(columns)}")

    def scores(self, completions: Sequence[Any], columns: Mapping[str, Any]) -> BatchScores:
        if self.boxes_key not in columns:
            raise ValueError(f"DiG reward needs the GT pixel boxes in a dataset column {self.boxes_key!r}; "
                             f"got columns {sorted(columns)}")
        texts = tuple(completion_text(c) for c in completions)
        boxes = columns[self.boxes_key]
        sizes = self.sizes_from(columns)
        key = (texts, repr(boxes), repr(sizes))
        if key != self._last_key:  # the trainer calls each component on the same batch in turn
            self._last = score_batch(texts, boxes, sizes, self.cfg)
            self._last_key = key
            log_metric = columns.get("log_metric")
            if callable(log_metric) and len(texts):
                for name in ("precision", "recall"):
                    log_metric(f"dig/{name}", float(getattr(self._last, name).mean()))
                log_metric("dig/n_pred", float(self._last.n_pred.mean()))
                log_metric("dig/n_gt", float(self._last.n_gt.mean()))
        assert self._last is not None
        return self._last


class _Component:
    """One reward component as a TRL reward function (picklable; TRL names it by ``__name__``)."""

    def __init__(self, reward: DigReward, component: str) -> None:
        self.reward, self.component = reward, component
        self.__name__ = f"dig_{component}"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 **columns: Any) -> list[float]:
        return getattr(self.reward.scores(completions, columns), self.component).tolist()


def make_reward_funcs(cfg: RewardConfig, boxes_key: str = "boxes",
                      size_key: str = "image_size") -> tuple[list[Callable[..., list[float]]], list[float]]:
    """``(reward_funcs, reward_weights)`` for ``GRPOTrainer(reward_funcs=...)`` and ``GRPOConfig(reward_weights=...)``.

    >>> funcs, weights = make_reward_funcs(RewardConfig.ablation("format+iou"))
    >>> [f.__name__ for f in funcs], weights
    (['dig_format', 'dig_f1', 'dig_iou'], [1.0, 0.0, 1.0])
    >>> funcs[1](prompts=["p"], completions=[[{"role": "assistant", "content": "[[0,0,0.5,0.5]]"}]],
    ...          boxes=[[[0, 0, 50, 50]]], image_size=[[100, 100]])
    [1.0]
    """
    reward = DigReward(cfg, boxes_key=boxes_key, size_key=size_key)
    return [_Component(reward, c) for c in COMPONENTS], cfg.weights


def make_total_reward(cfg: RewardConfig, boxes_key: str = "boxes",
                      size_key: str = "image_size") -> Callable[..., list[float]]:
    """A single TRL reward function returning the weighted total (when per-component logs are not wanted)."""
    return _Component(DigReward(cfg, boxes_key=boxes_key, size_key=size_key), "total")
