"""Open-vocabulary grounding of the recognised objects with transformers' GroundingDINO.

The model is loaded with ``from_pretrained`` from a hub id (default ``IDEA-Research/grounding-dino-base``)
or a local directory, through ``AutoProcessor`` (which picks the PIL image processor when torchvision is
absent) and ``GroundingDinoForObjectDetection``.

All object names of an image go into one prompt (``"white cup. man. table."``, split into several
prompts when longer than the model's ``max_text_len``). Each query's token probabilities are mapped back
to the phrase whose tokens it matches best, using the tokenizer's character offsets:

* ``box_threshold``: a query is kept when its best token probability inside that phrase reaches it
  (GroundingDINO's box confidence);
* ``text_threshold``: ... and when the mean probability over the phrase's tokens reaches it, so a box
  matched by one sub-word of a long phrase does not count as that phrase.

Boxes are clipped to the image, de-duplicated per phrase (greedy NMS with ``nms_iou``), and at most
``max_per_name`` kept per phrase (the filter stage decides what "too many boxes" means).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tinygg.boxes import box_iou

logger = logging.getLogger(__name__)

DEFAULT_GROUNDING_MODEL = "IDEA-Research/grounding-dino-base"


@dataclass(frozen=True)
class Detection:
    name: str
    box: list[float]  # pixel [x1, y1, x2, y2] inside the image
    score: float


def _phrase_spans(phrases: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """GroundingDINO's prompt ``"a. b."`` and the character span of each phrase in it."""
    text, spans = "", []
    for phrase in phrases:
        if text:
            text += " "
        spans.append((len(text), len(text) + len(phrase)))
        text += phrase + "."
    return text, spans


def clean_name(name: str) -> str:
    """The phrase GroundingDINO is asked for: lower case, single spaces, no '.' (its phrase separator)."""
    return " ".join(name.replace(".", " ").lower().split())


class GroundingDetector:
    """GroundingDINO detector for lists of object names (see module docstring for the thresholds)."""

    def __init__(
        self,
        model_id_or_dir: str | Path = DEFAULT_GROUNDING_MODEL,
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float = 0.7,
        max_per_name: int = 10,
        device: str = "cpu",
    ):
        for flag, value in (
            ("--box-threshold", box_threshold),
            ("--text-threshold", text_threshold),
            ("--nms-iou", nms_iou),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{flag} must lie in [0, 1]; got {value}")
        if max_per_name < 1:
            raise ValueError(f"max_per_name must be >= 1; got {max_per_name}")
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        self.model_id = str(model_id_or_dir)
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_id)
            self.model = GroundingDinoForObjectDetection.from_pretrained(self.model_id).to(device).eval()
        except OSError as exc:
            raise OSError(
                f"--grounding-model {self.model_id!r}: cannot load a GroundingDINO checkpoint "
                f"(a hub id needs network access or a cached copy; a directory needs "
                f"config.json, weights and processor files): {exc}"
            ) from exc
        self.device = device
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.nms_iou = nms_iou
        self.max_per_name = max_per_name
        self.max_text_len = int(self.model.config.max_text_len)

    def _chunks(self, phrases: list[str]) -> list[list[str]]:
        """Split phrases into prompts that fit ``max_text_len`` tokens (with [CLS] and [SEP])."""
        chunks: list[list[str]] = [[]]
        for phrase in phrases:
            trial = chunks[-1] + [phrase]
            n_tokens = len(self.processor.tokenizer(_phrase_spans(trial)[0])["input_ids"])
            if n_tokens > self.max_text_len and chunks[-1]:
                chunks.append([phrase])
            else:
                chunks[-1] = trial
        return [c for c in chunks if c]

    @torch.inference_mode()
    def _detect_chunk(self, image: Image.Image, phrases: list[str]) -> list[Detection]:
        text, spans = _phrase_spans(phrases)
        inputs = self.processor(images=image, text=text, return_tensors="pt")
        if inputs["input_ids"].shape[1] > self.max_text_len:
            raise ValueError(
                f"object name too long for GroundingDINO ({inputs['input_ids'].shape[1]} > "
                f"{self.max_text_len} tokens): {phrases}"
            )
        offsets = self.processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        outputs = self.model(**inputs.to(self.device))
        n_tokens = inputs["input_ids"].shape[1]
        probs = outputs.logits[0, :, :n_tokens].sigmoid().float().cpu().numpy()  # (Q, T)
        cx, cy, w, h = outputs.pred_boxes[0].float().cpu().numpy().T  # each (Q,), relative to the image
        W, H = image.size
        boxes = np.stack([(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], axis=1)
        boxes = np.clip(boxes, 0, [W, H, W, H])  # (Q, 4) pixels

        best = np.full((len(phrases), probs.shape[0]), -1.0)  # (P, Q) max token prob per phrase
        for p, (start, end) in enumerate(spans):
            tokens = [t for t, (s, e) in enumerate(offsets) if e > s >= start and e <= end]
            if not tokens:
                continue
            peak = probs[:, tokens].max(axis=1)
            mean = probs[:, tokens].mean(axis=1)
            best[p] = np.where(mean >= self.text_threshold, peak, -1.0)
        owner = best.argmax(axis=0)  # (Q,) phrase each query matches best
        score = best.max(axis=0)  # (Q,)
        keep = (
            (score >= self.box_threshold)
            & (boxes[:, 2] - boxes[:, 0] >= 1)
            & (boxes[:, 3] - boxes[:, 1] >= 1)
        )

        detections: list[Detection] = []
        for p, phrase in enumerate(phrases):
            idx = np.flatnonzero(keep & (owner == p))
            idx = idx[np.argsort(-score[idx], kind="stable")]
            chosen: list[int] = []
            for i in idx:
                if chosen and box_iou(boxes[i : i + 1], boxes[chosen]).max() > self.nms_iou:
                    continue
                chosen.append(int(i))
                if len(chosen) == self.max_per_name:
                    break
            detections += [
                Detection(phrase, [round(float(v), 2) for v in boxes[i]], round(float(score[i]), 4))
                for i in chosen
            ]
        return detections

    def detect(self, image: Image.Image, names: list[str]) -> list[Detection]:
        """Boxes for each of ``names`` in ``image`` (names lower-cased; '.' removed; duplicates merged)."""
        phrases = list(dict.fromkeys(n for n in (clean_name(x) for x in names) if n))
        detections: list[Detection] = []
        for chunk in self._chunks(phrases):
            detections += self._detect_chunk(image, chunk)
        return detections
