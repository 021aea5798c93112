"""Speed of the served super-resolution: milliseconds per image on one CPU thread.

The goal is at most 10 ms per 64 → 256 px image (the ×4 net), on this machine, with
``torch.set_num_threads(1)``: what one API worker spends to serve ``?size=256`` beyond making the 64 px image.
Each figure is the time of one call on one image (batch of one, as a request makes it), repeated; the ×2 net
(64 → 128), the restorer (64 → 64) and Pillow's bicubic and Lanczos (64 → 256) are timed alongside, and a batch of
16 images gives the throughput a batch job would see. Images are demo drawings (content does not change the cost).

Two clocks: wall time, and the CPU time of the calling thread (``time.thread_time``; with one torch thread the
work runs on it). On a machine shared with other jobs, wall time also counts the waits for a free core; CPU time
is what the call itself costs. The report gives both, with the machine's load average, and judges the goal on each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from engine.serving.enhance import Enhancer
from engine.world.art import draw_item
from features.degradations import upscale

GOAL_MS = 10.0


def _stats(times: tuple[np.ndarray, np.ndarray]) -> dict:
    wall, cpu = times
    return {
        "calls": len(wall),
        "p50_ms": float(np.percentile(wall, 50)),
        "p90_ms": float(np.percentile(wall, 90)),
        "min_ms": float(wall.min()),
        "mean_ms": float(wall.mean()),
        "cpu_p50_ms": float(np.percentile(cpu, 50)),
        "cpu_p90_ms": float(np.percentile(cpu, 90)),
    }


def _time(call: Callable[[], object], repeats: int, warmup: int = 5, per: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(wall ms, thread CPU ms) of ``repeats`` calls, each divided by ``per`` (images a call makes)."""
    for _ in range(warmup):
        call()
    wall, cpu = np.empty(repeats), np.empty(repeats)
    for k in range(repeats):
        started, started_cpu = time.perf_counter(), time.thread_time()
        call()
        wall[k] = (time.perf_counter() - started) * 1000.0 / per
        cpu[k] = (time.thread_time() - started_cpu) * 1000.0 / per
    return wall, cpu


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
            batched = _time(lambda: enhancer.upscale(batch, 4), max(3, repeats // 16), per=len(batch))
    finally:
        torch.set_num_threads(before)
    results = {name: _stats(ms) for name, ms in timings.items()}
    results[f"sr x4 ({n} → {4 * n}), per image in batches of 16"] = _stats(batched)
    x4 = results[f"sr x4 ({n} → {4 * n})"]
    assert enhancer.sr is not None  # the caller loaded one (load_enhancer refuses a bundle without)
    return {
        "threads": threads,
        "repeats": repeats,
        "net": {r: {"width": net.config.width, "blocks": net.config.blocks} for r, net in enhancer.sr.nets.items()},
        "parameters": {r: sum(p.numel() for p in net.parameters()) for r, net in enhancer.sr.nets.items()},
        "results": results,
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "goal_ms": GOAL_MS,
        "goal_met_wall": bool(x4["p50_ms"] <= GOAL_MS),
        "goal_met_cpu": bool(x4["cpu_p50_ms"] <= GOAL_MS),
    }


def format_bench(report: dict) -> str:
    load = ", ".join(f"{x:.1f}" for x in report["load_average"])
    lines = [
        f"one image per call, torch threads {report['threads']}, {report['repeats']} calls each; "
        f"load average {load} on {report['cpus']} CPUs"
    ]
    lines.append(f"  {'':<44} {'wall p50':>9} {'p90':>7} {'min':>7} {'CPU p50':>9} {'p90':>7}")
    for name, s in report["results"].items():
        lines.append(
            f"  {name:<44} {s['p50_ms']:>9.2f} {s['p90_ms']:>7.2f} {s['min_ms']:>7.2f} "
            f"{s['cpu_p50_ms']:>9.2f} {s['cpu_p90_ms']:>7.2f}"
        )
    wall, cpu = ("met" if report[k] else "missed" for k in ("goal_met_wall", "goal_met_cpu"))
    lines.append(f"goal: ×4 at most {report['goal_ms']:.0f} ms per image (p50): wall time {wall}, CPU time {cpu}")
    return "\n".join(lines)
