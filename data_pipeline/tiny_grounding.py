"""A tiny, randomly initialised GroundingDINO checkpoint, for tests and offline dry runs.

It has the real architecture (Swin backbone without timm, BERT text encoder, deformable encoder and
decoder) at toy sizes, saved with ``save_pretrained`` together with a processor (PIL image processor,
BERT tokenizer on a small word vocabulary), so the pipeline loads it through exactly the code path it
uses for ``IDEA-Research/grounding-dino-base``. Its boxes are random: use a low ``--box-threshold``.

    python -m data_pipeline.tiny_grounding /tmp/tiny-gdino
"""

from __future__ import annotations

import sys
from pathlib import Path

BASE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "the", "of", "and", "with"]


def build_tiny_grounding_dino(out_dir: str | Path, words: list[str] | None = None, seed: int = 0) -> Path:
    """Write a tiny random GroundingDINO (model + processor) to ``out_dir`` and return the directory.

    ``words`` extends the tokenizer's vocabulary (unknown words map to [UNK], which still works).
    """
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SwinConfig,
    )
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys(BASE_VOCAB + [w.lower() for w in (words or [])]))
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_file))
    backbone = SwinConfig(
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        image_size=128,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    # d_model must be a multiple of 32 (GroupNorm(32, d_model)); 2 decoder layers (tied box heads need >1);
    # images of >= 128 px keep the coarsest (4th) feature level larger than 1x1.
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=30,
        num_feature_levels=4,
        max_text_len=48,
        encoder_n_points=1,
        decoder_n_points=1,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 128, "longest_edge": 192}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


if __name__ == "__main__":
    print(build_tiny_grounding_dino(sys.argv[1] if len(sys.argv) > 1 else "tiny-grounding-dino"))
