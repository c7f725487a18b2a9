"""The binding task of ``binding_toy.py`` for one hand-written attention layer (docs/demo_recipe.md, section 11).

Same images (G = 4, two objects of different colours, 2-D sin-cos positions through a trainable projector); the
query is the asked colour word's embedding, keys and values are the image tokens, and a linear head reads the
row and the column from the attention output. Compared with the tiny Qwen2 it has no residual stream, no MLP,
no RoPE and no input norms, which the flags put back one at a time.

    python scripts/experiments/binding_toy_attention.py                   # ~1-2 min on one core
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from binding_toy import COLOURS, sample_scenes

from tinygg.vision import sincos_2d

G, DIM = 4, 192


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--embed-std", type=float, default=0.02, help="init std of the colour word embeddings")
    ap.add_argument("--input-norm", action="store_true", help="RMSNorm on the query's and the keys' inputs")
    ap.add_argument("--readout", choices=("attention", "norm", "residual", "residual-norm"), default="attention",
                    help="what the linear head reads: the attention output o, RMSNorm(o), word embedding + o, or "
                         "RMSNorm(word embedding + o) as a transformer does (default: %(default)s)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    pos = sincos_2d(G, 64)
    proj = torch.nn.Sequential(torch.nn.Linear(COLOURS + 1 + 64, DIM), torch.nn.GELU(), torch.nn.Linear(DIM, DIM))
    emb = torch.nn.Embedding(COLOURS, DIM)
    torch.nn.init.normal_(emb.weight, std=a.embed_std)
    wq, wk, wv = (torch.nn.Linear(DIM, DIM) for _ in range(3))
    for w in (wq, wk, wv):
        torch.nn.init.normal_(w.weight, std=0.02)
    out = torch.nn.Linear(DIM, 2 * G)
    norm_k, norm_out, norm_q = torch.nn.RMSNorm(DIM), torch.nn.RMSNorm(DIM), torch.nn.RMSNorm(DIM)
    params = [p for m in (proj, emb, wq, wk, wv, out, norm_k, norm_out, norm_q) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0)
    h = a.heads

    def batch(n: int, one: bool = False):
        feat, colour, cell = sample_scenes(n, G, pos, one)
        return feat, colour, cell // G, cell % G

    def forward(feat, colour):
        x = proj(feat)
        x = norm_k(x) if a.input_norm else x
        e = emb(colour)
        q = wq(norm_q(e) if a.input_norm else e).view(-1, h, DIM // h)
        k = wk(x).view(x.shape[0], -1, h, DIM // h)
        att = torch.softmax(torch.einsum("bhd,bnhd->bhn", q, k) / math.sqrt(DIM // h), -1).mean(1)
        o = torch.einsum("bn,bnd->bd", att, wv(x))
        o = {"attention": lambda: o, "norm": lambda: norm_out(o), "residual": lambda: e + o,
             "residual-norm": lambda: norm_out(e + o)}[a.readout]()
        o = out(o)
        return o[:, :G], o[:, G:]

    for step in range(1, a.steps + 1):
        feat, colour, row, col = batch(8)
        pr, pc = forward(feat, colour)
        loss = torch.nn.functional.cross_entropy(pr, row) + torch.nn.functional.cross_entropy(pc, col)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == a.steps:
            with torch.no_grad():
                accs = []
                for one in (False, True):
                    feat, colour, row, col = batch(512, one)
                    pr, pc = forward(feat, colour)
                    accs.append(((pr.argmax(-1) == row) & (pc.argmax(-1) == col)).float().mean().item())
            print(f"step {step} loss {loss.item():.3f} two objects {accs[0]:.3f} one object {accs[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
