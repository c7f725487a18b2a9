"""The DiG question in miniature: can the tiny preset's Qwen2 learn to point at what changed between two images?

Two "images" of ``G x G`` tokens each (a trainable two-layer projector of a colour one-hot, or background, plus the
2-D sin-cos position code of ``tinygg.vision.sincos_2d``, the same code in both images), then ``SEP``; the model
answers the changed cell's row digit and column digit. Image B is image A with one object recoloured, deleted or
added (``--kinds``). Pointing at a random object of B scores about ``1 / objects``; accuracy is both digits right,
teacher-forced, on 512 fresh pairs every 250 steps, overall and by kind.

    python scripts/experiments/dig_toy.py --grid 4 --steps 3000          # a few minutes on one core
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from binding_toy import COLOURS, DIGIT_IDS, SEP, VOCAB, image_projector, trainer

from tinygg.configuration import TINY
from tinygg.vision import sincos_2d

KINDS = ("color", "delete", "add")


def sample_pairs(n: int, g: int, objects: tuple[int, int], kinds: tuple[str, ...],
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` pairs: colour indices of A and B per cell (``COLOURS`` = background), the changed cell, the kind."""
    a = torch.full((n, g * g), COLOURS)
    b = a.clone()
    cell = torch.empty(n, dtype=torch.long)
    kind = torch.randint(0, len(kinds), (n,), generator=gen)
    lo, hi = objects
    for i in range(n):
        k = int(torch.randint(lo, hi + 1, (), generator=gen))
        cells = torch.randperm(g * g, generator=gen)[:k + 1]  # the last one is free for "add"
        a[i, cells[:k]] = torch.randint(0, COLOURS, (k,), generator=gen)
        b[i] = a[i]
        name = kinds[kind[i]]
        if name == "add":
            cell[i] = cells[k]
            b[i, cell[i]] = torch.randint(0, COLOURS, (), generator=gen)
        else:
            cell[i] = cells[int(torch.randint(0, k, (), generator=gen))]
            if name == "delete":
                b[i, cell[i]] = COLOURS
            else:  # another colour
                b[i, cell[i]] = (a[i, cell[i]] + 1 + torch.randint(0, COLOURS - 1, (), generator=gen)) % COLOURS
    return a, b, cell, kind


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=int, default=8, help="image tokens per side (8: the tiny preset's 64 tokens)")
    ap.add_argument("--objects", type=int, nargs=2, default=(3, 6), metavar=("MIN", "MAX"),
                    help="objects in image A")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--steps", type=int, default=3000, help="length of the cosine schedule")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--layers", type=int, default=TINY["text"]["num_hidden_layers"])
    ap.add_argument("--embed-std", type=float, default=None, help="re-initialise the input embeddings with this std")
    ap.add_argument("--one-image", action="store_true",
                    help="control: the answer is the changed cell but only image B is shown (cannot be learnt "
                         "beyond pointing at an object)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    kinds = tuple(a.kinds)
    if not 1 <= a.objects[0] <= a.objects[1] < a.grid ** 2:
        ap.error(f"--objects: 1 <= MIN <= MAX < {a.grid ** 2} (a free cell is needed for 'add')")

    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, **dict(TINY["text"], num_hidden_layers=a.layers)))
    g, dim = a.grid, lm.config.hidden_size
    pos = sincos_2d(g, 64)
    if a.embed_std is not None:
        with torch.no_grad():
            lm.get_input_embeddings().weight.normal_(0.0, a.embed_std)
    proj = image_projector(dim)
    update = trainer(list(lm.parameters()) + list(proj.parameters()), a.lr, a.steps)
    embed = lm.get_input_embeddings()
    train_gen, eval_gen = torch.Generator().manual_seed(a.seed), torch.Generator().manual_seed(10_000 + a.seed)

    def image(colours: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(colours, COLOURS + 1).float()
        return proj(torch.cat([onehot, pos.expand(len(colours), -1, -1)], -1))

    def forward(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ca, cb, cell, kind = sample_pairs(n, g, tuple(a.objects), kinds, gen)
        gold = torch.stack([DIGIT_IDS + cell // g, DIGIT_IDS + cell % g], 1)
        sep = embed(torch.full((n, 1), SEP))
        parts = ([] if a.one_image else [image(ca), sep]) + [image(cb), sep, embed(gold[:, :1])]
        logits = lm(inputs_embeds=torch.cat(parts, 1)).logits[:, -2:]
        return logits, gold, kind

    t0 = time.time()
    for step in range(1, a.steps + 1):
        logits, gold, _ = forward(a.batch, train_gen)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), gold.reshape(-1))
        update(loss)
        if step % 250 == 0 or step == a.steps:
            with torch.no_grad():
                logits, gold, kind = forward(512, eval_gen)
                right = (logits.argmax(-1) == gold).all(-1).float()
            by_kind = " ".join(f"{name} {right[kind == i].mean().item():.3f}" for i, name in enumerate(kinds))
            print(f"step {step} loss {loss.item():.3f} accuracy {right.mean().item():.3f} ({by_kind}) "
                  f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
