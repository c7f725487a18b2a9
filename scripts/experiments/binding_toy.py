"""The binding problem of the tiny demo model in miniature (docs/demo_recipe.md, section 11).

The tiny preset's Qwen2 reads ``G x G`` "image tokens" (a trainable two-layer projector of a colour one-hot, or
background, plus the 2-D sin-cos position code of ``tinygg.vision.sincos_2d``), then ``SEP colour SEP``, and answers
the asked object's row digit and column digit. Images hold two objects of different colours; one-object images,
scored beside them, measure localisation alone (finding *an* object at random scores half of that on two objects).
Accuracy: both digits right, teacher-forced, on 512 fresh images every 250 steps.

    python scripts/experiments/binding_toy.py --grid 4 --steps 3000          # ~3-5 min on one core
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from tinygg.configuration import TINY
from tinygg.train.config import gap_schedule
from tinygg.vision import sincos_2d

COLOURS, COLOUR_IDS, DIGIT_IDS, SEP, VOCAB = 8, 20, 40, 50, 64


def draw_objects(n: int, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two distinct cells of the ``g x g`` grid and two distinct colours for each of ``n`` scenes."""
    cells = torch.stack([torch.randperm(g * g)[:2] for _ in range(n)])
    return cells, torch.stack([torch.randperm(COLOURS)[:2] for _ in range(n)])


def sample_scenes(n: int, g: int, pos: torch.Tensor, one: bool = False, paired: bool = False):
    """``n`` random images of two objects (or one) of different colours on a ``g x g`` grid: token features
    ``(n, g*g, colours + 1 + position channels)``, the asked object's colour and its cell. ``paired``: rows
    ``2i`` and ``2i + 1`` hold the same image and ask for its two objects (``n`` even)."""
    cells, cols = draw_objects(n, g)
    feat = torch.zeros(n, g * g, COLOURS + 1)
    feat[..., COLOURS] = 1  # background
    for b in range(n):
        for k in range(1 if one else 2):
            feat[b, cells[b, k]] = 0
            feat[b, cells[b, k], cols[b, k]] = 1
    feat = torch.cat([feat, pos.expand(n, -1, -1)], -1)
    which = torch.zeros(n, dtype=torch.long) if one else torch.randint(0, 2, (n,))
    if paired and not one:
        keep = torch.arange(n) // 2 * 2  # row 2i + 1 repeats image 2i and asks for the other object
        feat, cells, cols = feat[keep], cells[keep], cols[keep]
        which = torch.arange(n) % 2
    return feat, cols[torch.arange(n), which], cells[torch.arange(n), which]


def image_projector(dim: int) -> torch.nn.Module:
    """The toys' two-layer projector of an image token (colour one-hot or background, 64 position channels)."""
    return torch.nn.Sequential(torch.nn.Linear(COLOURS + 1 + 64, dim), torch.nn.GELU(), torch.nn.Linear(dim, dim))


def trainer(params: list[torch.nn.Parameter], lr: float, steps: int, wd: float = 0.0,
            constant: bool = False) -> Callable[[torch.Tensor], None]:
    """AdamW, 60 warm-up steps, then a cosine decay over ``steps`` (or ``constant``): one update per loss given."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1, s / 60) * (1.0 if constant else 0.5 * (1 + math.cos(math.pi * s / steps))))

    def update(loss: torch.Tensor) -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()

    return update


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=int, default=8, help="image tokens per side (8: the tiny preset's 64 tokens)")
    ap.add_argument("--steps", type=int, default=3000, help="length of the cosine schedule")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.0, help="AdamW weight decay")
    ap.add_argument("--constant-lr", action="store_true", help="no cosine decay after the warm-up")
    ap.add_argument("--paired", action="store_true",
                    help="each image is asked about both of its objects, as two rows of the same batch")
    ap.add_argument("--text-weight", type=float, default=0.0,
                    help="also train, with this loss weight, on the same lookup in text: 'c1 r1 k1 c2 r2 k2 SEP c SEP r k'")
    ap.add_argument("--aux-at-word", type=float, default=0.0,
                    help="also ask for the row at the colour word itself, with this loss weight (the answer stays at SEP)")
    ap.add_argument("--text-only", action="store_true", help="train on the text task alone")
    ap.add_argument("--text-steps", type=int, default=None, help="the text task only for the first N steps")
    ap.add_argument("--text-batch", type=int, default=None, help="batch of the text task (--batch when unset)")
    ap.add_argument("--text-first", type=int, default=0,
                    help="the first N steps train the text task alone, then the images join (a text pretraining)")
    ap.add_argument("--hidden", type=int, default=None, help="hidden size (MLP 4x; the tiny preset's when unset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplier of the image tokens")
    ap.add_argument("--layers", type=int, default=TINY["text"]["num_hidden_layers"])
    ap.add_argument("--heads", type=int, default=TINY["text"]["num_attention_heads"],
                    help="attention heads (as many key / value heads when changed)")
    ap.add_argument("--rope-theta", type=float, default=TINY["text"]["rope_parameters"]["rope_theta"])
    ap.add_argument("--embed-std", type=float, default=None, help="re-initialise the input embeddings with this std")
    ap.add_argument("--sep-std", type=float, default=None,
                    help="then re-initialise the separator's input embedding alone with this std")
    ap.add_argument("--untie", action="store_true", help="separate input and output embeddings")
    ap.add_argument("--qk-init", type=float, default=1.0, help="multiplier of the q / k projection init")
    ap.add_argument("--one-object-steps", type=int, default=0, help="first N steps on one-object images only")
    ap.add_argument("--shared", action="store_true", help="object tokens also carry their colour word's embedding")
    ap.add_argument("--at-word", action="store_true",
                    help="predict the row at the colour word (no SEP after it; --gap 0)")
    ap.add_argument("--gap", type=int, default=1, help="SEP tokens between the colour word and the row digit")
    ap.add_argument("--distinct-gap", action="store_true",
                    help="the gap's tokens are distinct (SEP, then ids after it), as the real prompt's template tokens "
                         "are, instead of one SEP repeated")
    ap.add_argument("--gap-mix", action="store_true",
                    help="each training step draws its gap uniformly from 0 .. --gap (evaluation at --gap)")
    ap.add_argument("--gap-every", type=int, default=0,
                    help="curriculum: start with the answer at the word (one SEP after the image with "
                         "--question-first) and add one SEP every N steps up to --gap; evaluation uses the current "
                         "gap and, when it differs, the final one")
    ap.add_argument("--gap-from", type=int, default=0, help="curriculum: the first SEP is added at this step "
                                                             "(--gap-every when 0)")
    ap.add_argument("--question-first", action="store_true",
                    help="SEP colour, then the image, then SEP (--gap of them) row col")
    a = ap.parse_args(argv)
    if a.at_word:
        a.gap = 0
    if a.question_first and (a.gap < 1 or a.gap_mix):  # the question's SEP stays; gaps after the image
        ap.error("--question-first takes --gap >= 1 (SEPs between the image and the answer): not --at-word or "
                 "--gap-mix")
    if a.text_only or a.text_first:
        a.text_weight = a.text_weight or 1.0
    if a.distinct_gap and SEP + a.gap > VOCAB:
        ap.error(f"--distinct-gap: at most {VOCAB - SEP} tokens")
    if a.text_weight and (a.gap != 1 or a.gap_every or a.question_first):
        ap.error("--text-weight uses the default layout (SEP colour SEP row col)")

    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    text = dict(TINY["text"], tie_word_embeddings=not a.untie, num_hidden_layers=a.layers)
    if a.hidden is not None:
        text.update(hidden_size=a.hidden, intermediate_size=4 * a.hidden)
    text["rope_parameters"] = dict(text["rope_parameters"], rope_theta=a.rope_theta)
    if a.heads != TINY["text"]["num_attention_heads"]:
        text.update(num_attention_heads=a.heads, num_key_value_heads=a.heads)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, **text))
    g, dim = a.grid, lm.config.hidden_size
    pos = sincos_2d(g, 64)
    with torch.no_grad():
        if a.embed_std is not None:
            lm.get_input_embeddings().weight.normal_(0.0, a.embed_std)
        if a.sep_std is not None:
            lm.get_input_embeddings().weight[SEP].normal_(0.0, a.sep_std)
        for layer in lm.model.layers:
            layer.self_attn.q_proj.weight.mul_(a.qk_init)
            layer.self_attn.k_proj.weight.mul_(a.qk_init)
    proj = image_projector(dim)
    update = trainer(list(lm.parameters()) + list(proj.parameters()), a.lr, a.steps, a.wd, a.constant_lr)
    embed = lm.get_input_embeddings()

    draw_gap = torch.Generator().manual_seed(a.seed + 1)  # its own stream: the scenes stay those of the other runs

    def gap_at(step: int, train: bool = False) -> int:
        if a.gap_mix and train:
            return int(torch.randint(0, a.gap + 1, (), generator=draw_gap))
        if not a.gap_every:
            return a.gap
        first = 1 if a.question_first else 0  # the shortest layout
        return min(a.gap, gap_schedule(step, first, a.gap_from or a.gap_every, a.gap_every))

    def batch(n: int, one: bool = False, paired: bool = False, gap: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Image features and ``SEP colour SEP*gap row col`` (``gap`` only changes the token layout)."""
        feat, colour, cell = sample_scenes(n, g, pos, one, paired)
        fill = [SEP + (k if a.distinct_gap else 0) for k in range(gap)]
        ids = torch.stack([torch.full((n,), SEP), COLOUR_IDS + colour] + [torch.full((n,), t) for t in fill]
                          + [DIGIT_IDS + cell // g, DIGIT_IDS + cell % g], 1)
        return feat, ids

    def forward(feat: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = proj(feat) * a.scale
        if a.shared:
            has = feat[..., :COLOURS].sum(-1, keepdim=True)
            img = img + has * embed(COLOUR_IDS + feat[..., :COLOURS].argmax(-1))
        emb = embed(ids)
        n = g * g
        if a.question_first:  # SEP colour, the image, SEP * gap, row, col
            logits = lm(inputs_embeds=torch.cat([emb[:, :2], img, emb[:, 2:]], 1)).logits
            return logits[:, -3:-1], ids[:, -2:]
        logits = lm(inputs_embeds=torch.cat([img, emb], 1)).logits
        gap = ids.shape[1] - 4  # the last SEP (or the word when 0) predicts the row, the row predicts the column
        answer = logits[:, n + 1 + gap:n + 3 + gap]
        if a.aux_at_word and gap and torch.is_grad_enabled():  # training: the word also predicts the row
            return torch.cat([logits[:, n + 1:n + 2], answer], 1), torch.cat([ids[:, -2:-1], ids[:, -2:]], 1)
        return answer, ids[:, -2:]

    def text_batch(n: int) -> torch.Tensor:
        """The lookup in words: both objects' colour, row and column, then the question and the answer."""
        cells, cols = draw_objects(n, g)
        which = torch.randint(0, 2, (n,))
        scene = [t for k in range(2) for t in (COLOUR_IDS + cols[:, k], DIGIT_IDS + cells[:, k] // g,
                                                DIGIT_IDS + cells[:, k] % g)]
        ask, cell = cols[torch.arange(n), which], cells[torch.arange(n), which]
        return torch.stack(scene + [torch.full((n,), SEP), COLOUR_IDS + ask, torch.full((n,), SEP),
                                    DIGIT_IDS + cell // g, DIGIT_IDS + cell % g], 1)

    def text_forward(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = lm(input_ids=ids).logits[:, -3:-1]
        return logits, ids[:, -2:]

    def accuracy(one: bool, gap: int) -> float:
        pred, gold = forward(*batch(512, one=one, gap=gap))
        return (pred.argmax(-1) == gold).all(-1).float().mean().item()

    t0 = time.time()
    for step in range(1, a.steps + 1):
        loss = torch.zeros(())
        if not a.text_only and step > a.text_first:
            pred, gold = forward(*batch(a.batch, one=step <= a.one_object_steps, paired=a.paired,
                                        gap=gap_at(step, train=True)))
            if a.aux_at_word:
                weight = torch.tensor([a.aux_at_word, 1.0, 1.0]).expand(len(gold), -1).reshape(-1)
                each = torch.nn.functional.cross_entropy(pred.reshape(-1, VOCAB), gold.reshape(-1), reduction="none")
                loss = (each * weight).sum() / (2 * len(gold))
            else:
                loss = torch.nn.functional.cross_entropy(pred.reshape(-1, VOCAB), gold.reshape(-1))
        if a.text_weight and (a.text_steps is None or step <= a.text_steps):
            tp, tg = text_forward(text_batch(a.text_batch or a.batch))
            loss = loss + a.text_weight * torch.nn.functional.cross_entropy(tp.reshape(-1, VOCAB), tg.reshape(-1))
        update(loss)
        if step % 250 == 0 or step == a.steps:
            with torch.no_grad():
                gap = gap_at(step)
                two, one = accuracy(False, gap), accuracy(True, gap)
                words = f"(gap {gap}) " if a.gap_every else ""
                if gap != a.gap:  # how far the final layout is
                    words += f"at gap {a.gap}: two {accuracy(False, a.gap):.3f} "
                if a.text_weight:  # only then: drawing these would change the data of the other runs
                    tp, tg = text_forward(text_batch(512))
                    words += f"text {(tp.argmax(-1) == tg).all(-1).float().mean().item():.3f} "
            print(f"step {step} loss {loss.item():.3f} two objects {two:.3f} one object {one:.3f} {words}"
                  f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
