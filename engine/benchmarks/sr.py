"""Speed of the served super-resolution: milliseconds per image on one CPU thread.

The goal is at most 10 ms per 64 → 256 px image (the ×4 net), on this machine, with
``torch.set_num_threads(1)``: what one API worker spends to serve ``?size=256`` beyond making the 64 px image.
Each figure is the time of one call on one image (batch of one, as a request makes it), repeated; the ×2 net
(64 → 128), the restorer (64 → 64) and Pillow's bicubic and Lanczos (64 → 256) are timed alongside, and a batch of
16 images gives the throughput a batch job would see. Images are demo drawings (content does not change the cost).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from engine.serving.enhance import Enhancer
from engine.world.art import draw_item
from features.degradations import upscale

GOAL_MS = 10.0


def _stats(ms: np.ndarray) -> dict:
    return {
        "calls": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "min_ms": float(ms.min()),
        "mean_ms": float(ms.mean()),
    }


def _time(call: Callable[[], object], repeats: int, warmup: int = 5) -> np.ndarray:
    for _ in range(warmup):
        call()
    ms = np.empty(repeats)
    for k in range(repeats):
        started = time.perf_counter()
        call()
        ms[k] = (time.perf_counter() - started) * 1000.0
    return ms


def bench_sr(enhancer: Enhancer, *, repeats: int = 200, threads: int = 1, seed: int = 0) -> dict:
    """Per-image latency of the served nets and of classical interpolation; torch runs on ``threads`` threads
    (restored afterwards)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    n = enhancer.native_size
    rng = np.random.default_rng(seed)
    images = np.stack([draw_item("dress", "red", "check", rng, n), draw_item("sneaker", "blue", "stripes", rng, n)])
    one = images[:1]
    batch = np.repeat(images, 8, axis=0)  # 16 images
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            timings = {
                f"sr x4 ({n} → {4 * n})": _time(lambda: enhancer.upscale(one, 4), repeats),
                f"sr x2 ({n} → {2 * n})": _time(lambda: enhancer.upscale(one, 2), repeats),
                f"restore ({n} → {n})": _time(lambda: enhancer.restore(one[0]), repeats),
                f"bicubic ({n} → {4 * n})": _time(lambda: upscale(one[0], 4, "bicubic"), repeats),
                f"lanczos ({n} → {4 * n})": _time(lambda: upscale(one[0], 4, "lanczos"), repeats),
            }
            batched = _time(lambda: enhancer.upscale(batch, 4), max(3, repeats // 16)) / len(batch)
    finally:
        torch.set_num_threads(before)
    results = {name: _stats(ms) for name, ms in timings.items()}
    results[f"sr x4 ({n} → {4 * n}), per image in batches of 16"] = _stats(batched)
    x4 = results[f"sr x4 ({n} → {4 * n})"]["p50_ms"]
    assert enhancer.sr is not None  # the caller loaded one (load_enhancer refuses a bundle without)
    return {
        "threads": threads,
        "repeats": repeats,
        "net": {r: {"width": net.config.width, "blocks": net.config.blocks} for r, net in enhancer.sr.nets.items()},
        "parameters": {r: sum(p.numel() for p in net.parameters()) for r, net in enhancer.sr.nets.items()},
        "results": results,
        "goal_ms": GOAL_MS,
        "goal_met": bool(x4 <= GOAL_MS),
    }


def format_bench(report: dict) -> str:
    lines = [f"one image per call, torch threads {report['threads']}, {report['repeats']} calls each"]
    lines.append(f"  {'':<44} {'p50 ms':>8} {'p90 ms':>8} {'min ms':>8}")
    for name, s in report["results"].items():
        lines.append(f"  {name:<44} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} {s['min_ms']:>8.2f}")
    verdict = "met" if report["goal_met"] else "missed"
    lines.append(f"goal: ×4 at most {report['goal_ms']:.0f} ms per image (p50): {verdict}")
    return "\n".join(lines)
