"""Rendering throughput and quality of DiG pairs: the project's Blender defaults (32 Cycles samples +
OpenImageDenoise) against CLEVR's published setting (512 samples, no denoiser) at the same resolution,
on the same planned pairs in the same run; plus the flat renderer, and box tightness.

Prints pairs per minute for each setting and their ratio; PSNR of the project's images against the
512-sample render (the high-sample reference); and, for every visible object, the IoU between its tight
instance-mask box and the box of its projected 3-D bounding-box corners (the loose, occlusion-blind
alternative), from the Blender masks and from many flat-rendered scenes; and the share of pixels that
change between a pair's images outside its GT boxes (shadows, reflections, indirect light).

    python bench/render_throughput.py [--n 1] [--size 320x240] [--samples 32] [--reference-samples 512]
                                      [--flat-scenes 200] [--skip-blender] [--seed 0]

Blender at 512 samples takes about two minutes per 320x240 image on this shared 2-core machine, so --n
defaults to 1 pair (4 Cycles renders); use a larger --n on a bigger machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dig.camera import projected_box
from dig.cli import parse_size
from dig.masks import box_region, mask_box
from dig.pairs import PairConfig, change_boxes, plan_pair
from dig.render_flat import render_flat
from dig.scene import Scene
from tinygg.boxes import box_iou_aligned


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def tightness(scene: Scene, mask: np.ndarray, w: int, h: int) -> list[float]:
    """IoU of mask box vs projected-corner box for each visible object of ``scene``."""
    out = []
    for i, obj in enumerate(scene.objects):
        box = mask_box(mask, i + 1)
        if box is not None:
            out.append(float(box_iou_aligned(np.array(box, float), np.array(projected_box(obj.corners(), w, h)))))
    return out


def bench_blender(plans: list, w: int, h: int, args: argparse.Namespace, tmp: Path) -> dict:
    from dig.render_blender import BlenderPool

    threads = max(1, os.cpu_count() or 1)
    settings = {"project": (args.samples, True), "clevr": (args.reference_samples, False)}
    results: dict = {}
    with BlenderPool(workers=1) as pool:
        pool.submit({"id": "warmup", "width": 16, "height": 12, "samples": 1, "seed": 0, "threads": threads,
                     "scenes": [plans[0].scene_a.to_dict()] * 2,
                     "images": [str(tmp / "w_a.png"), str(tmp / "w_b.png")],
                     "masks": [str(tmp / "wm_a.png"), str(tmp / "wm_b.png")]}).result()  # bpy import
        for name, (samples, denoise) in settings.items():
            seconds = 0.0
            for plan in plans:
                d = tmp / name
                d.mkdir(exist_ok=True)
                start = time.perf_counter()
                pool.submit({"id": plan.pair_id, "width": w, "height": h, "samples": samples, "seed": args.seed,
                             "threads": threads, "denoise": denoise,
                             "scenes": [plan.scene_a.to_dict(), plan.scene_b.to_dict()],
                             "images": [str(d / f"{plan.pair_id}_{s}.png") for s in "ab"],
                             "masks": [str(d / f"{plan.pair_id}_m{s}.png") for s in "ab"]}).result()
                seconds += time.perf_counter() - start
            results[name] = {"samples": samples, "denoise": denoise, "seconds": seconds,
                             "pairs_per_minute": 60.0 * len(plans) / seconds}
    psnrs, ious = [], []
    outside: dict[str, list[float]] = {name: [] for name in settings}
    for plan in plans:
        masks = [np.asarray(Image.open(tmp / "project" / f"{plan.pair_id}_m{s}.png")) for s in "ab"]
        region = box_region(change_boxes(plan, *masks), w, h, dilate=3)
        for name in settings:
            a, b = (np.asarray(Image.open(tmp / name / f"{plan.pair_id}_{s}.png").convert("RGB")).astype(int)
                    for s in "ab")
            outside[name].append(float((np.abs(a - b).max(-1) > 8)[~region].mean()))
        for s, scene in (("a", plan.scene_a), ("b", plan.scene_b)):
            proj = np.asarray(Image.open(tmp / "project" / f"{plan.pair_id}_{s}.png").convert("RGB"))
            ref = np.asarray(Image.open(tmp / "clevr" / f"{plan.pair_id}_{s}.png").convert("RGB"))
            psnrs.append(psnr(proj, ref))
            ious += tightness(scene, np.asarray(Image.open(tmp / "project" / f"{plan.pair_id}_m{s}.png")), w, h)
    results["psnr_project_vs_reference_db"] = float(np.mean(psnrs))
    results["mask_vs_corner_box_iou"] = float(np.mean(ious))
    for name in settings:  # shadows, reflections and indirect light of the changed objects
        results[name]["changed_fraction_outside_boxes"] = float(np.mean(outside[name]))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1, help="pairs rendered with each Blender setting (default: 1)")
    ap.add_argument("--size", type=parse_size, default=(320, 240), help="WxH (default: 320x240)")
    ap.add_argument("--samples", type=int, default=32, help="the project's Cycles samples (default: 32)")
    ap.add_argument("--reference-samples", type=int, default=512, help="CLEVR's samples (default: 512)")
    ap.add_argument("--flat-scenes", type=int, default=200, help="flat pairs for throughput/tightness")
    ap.add_argument("--skip-blender", action="store_true", help="only the flat renderer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    w, h = args.size
    cfg = PairConfig(out="unused", size=(w, h), renderer="flat", difficulty="mixed", seed=args.seed)

    start = time.perf_counter()
    flat_ious = []
    for i in range(args.flat_scenes):
        plan = plan_pair(cfg, "mixed", i)
        ra, _ = render_flat(plan.scene_a, w, h), render_flat(plan.scene_b, w, h)
        flat_ious += tightness(plan.scene_a, ra.mask, w, h)
    flat_s = time.perf_counter() - start
    report: dict = {"size": f"{w}x{h}", "flat": {"pairs": args.flat_scenes, "seconds": flat_s,
                                                  "pairs_per_minute": 60.0 * args.flat_scenes / flat_s,
                                                  "mask_vs_corner_box_iou": float(np.mean(flat_ious))}}
    if not args.skip_blender:
        plans = [plan_pair(cfg, "mixed", i) for i in range(args.n)]  # planning does not depend on the renderer
        with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
            os.environ.setdefault("XDG_CACHE_HOME", str(Path(tmp) / "cache"))
            report["blender"] = bench_blender(plans, w, h, args, Path(tmp))
    print(json.dumps(report, indent=1))
    f = report["flat"]
    print(f"\nflat renderer: {f['pairs_per_minute']:.0f} pairs/min at {w}x{h}; mask-box vs corner-box mean IoU "
          f"{f['mask_vs_corner_box_iou']:.3f} over {len(flat_ious)} objects")
    if "blender" in report:
        b = report["blender"]
        p, c = b["project"], b["clevr"]
        print(f"blender, project ({p['samples']} samples + denoise): {p['pairs_per_minute']:.2f} pairs/min")
        print(f"blender, CLEVR ({c['samples']} samples):            {c['pairs_per_minute']:.2f} pairs/min")
        print(f"speed-up ratio project / CLEVR: {p['pairs_per_minute'] / c['pairs_per_minute']:.1f}x; "
              f"PSNR vs the {c['samples']}-sample render: {b['psnr_project_vs_reference_db']:.1f} dB; "
              f"mask-box vs corner-box IoU: {b['mask_vs_corner_box_iou']:.3f}")
        print(f"pixels changed by > 8 levels outside the GT boxes (dilated 3 px): project "
              f"{p['changed_fraction_outside_boxes']:.4f}, CLEVR {c['changed_fraction_outside_boxes']:.4f} "
              "(flat renderer: exactly 0)")
        print(f"flat / blender-project throughput ratio: {f['pairs_per_minute'] / p['pairs_per_minute']:.0f}x")


if __name__ == "__main__":
    main()
