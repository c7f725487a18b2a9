"""Tokenizers: the special tokens TinyGroundingGPT adds, and a small Qwen2-style tokenizer built locally.

The real presets use Qwen2.5's own tokenizer. The ``tiny`` preset needs no download, so it trains a small
byte-level BPE with Qwen2's pre-tokenisation (digits one by one, ChatML control tokens) on an embedded
corpus and wraps it in the same ``Qwen2Tokenizer`` class: every code path (chat template, special tokens,
padding, decoding) is the one the real models use. The build is deterministic.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase, Qwen2Tokenizer

IMAGE_TOKEN = "<image>"
OBJECT_TOKEN = "<object>"
CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# What the tiny models read and write: grounding prompts, CLEVR vocabulary, box text, chat.
_WORDS = """
the a an of in on at to is are and or with without left right front behind above below near next
object objects image images picture region box boxes coordinate coordinates output give find locate where
which what describe description detail short answer yes no there this that these those it its
please point out all every difference differences between two first second changed missing added removed
cube cubes sphere spheres ball cylinder cylinders shape color colour size material small large big tiny
gray grey red blue green brown purple cyan yellow rubber metal metallic matte shiny thing
one two three four five six seven eight nine ten none
you are helpful assistant user system question how many count same different than other
person man woman dog cat car tree sky water table chair cup coffee rocket astronaut people building
spot list spots mark marks show tell me can see look see find
"""


def _corpus() -> list[str]:
    words = _WORDS.split()
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    lines += [w.capitalize() for w in words]
    lines += [f"[0.{a:03d},0.{b:03d},0.{c:03d},0.{d:03d}]" for a, b, c, d in
              ((12, 345, 678, 901), (100, 250, 500, 750), (0, 0, 999, 999))]
    lines += ["Output the coordinate of the small red metal cube.", "What is in the region [0.1,0.2,0.3,0.4]?",
              "There is no difference.", "The differences are at", "1.000 0.5 2, 3; 4: 5! 6? (7) {8} \"9\" 'x'"]
    return lines * 4


def build_tiny_tokenizer(vocab_size: int = 1000) -> PreTrainedTokenizerBase:
    """A small byte-level BPE in Qwen2's format, with ChatML and ``<image>``/``<object>`` tokens added."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    import json

    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tok = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": CHATML_TOKENS[1:]})
    add_multimodal_tokens(tok)
    tok.model_max_length = 2048
    return tok


def add_multimodal_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """Add ``<image>`` and ``<object>`` as special tokens (idempotent); returns their ids."""
    missing = [t for t in (IMAGE_TOKEN, OBJECT_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, OBJECT_TOKEN])
    return int(ids[0]), int(ids[1])
