"""Compositional generalisation: does the generator draw a combination of attribute values it never saw?

``GET /v1/generate`` lets a merchant ask for any combination of known values, also one no catalogue item has.
This measures how well that works (``vitrine evaluate compositional``):

1. A store's catalogue photos, labelled by its attributes (a demo store: class, colour and pattern).
2. K combinations are held out (:func:`choose_holdout`): drawn at random among the combinations with at least
   ``min_items`` photos, keeping every single value of every attribute in training, so that what is tested is an
   unseen *combination* of seen values. Every photo of a held-out combination leaves the generator's training
   set (:func:`holdout_mask`).
3. The conditional GAN trains on the rest (:func:`engine.training.gan.train_gan`, the bundle's architecture and
   the demo preset's settings) within a budget of steps and seconds.
4. A judge (:class:`models.classifier.AttributeClassifier`) trains on the training split of *all* real photos,
   held-out combinations included, so it knows what they look like; its accuracy on the test split's real photos
   of the same combinations is the real floor.
5. ``samples`` images of each held-out combination, and of a seen combination matched to each (it differs in one
   attribute: :func:`choose_seen`), are judged:
   the share showing each requested value and every one of them, beside chance (1 / values; their product for
   all) and the majority baseline (a generator that always draws the training photos' most frequent values).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.evaluation.generator import generate_images, judge_images
from engine.training.classifier import ClassifierTrainConfig, train_classifier
from engine.training.config import load_train_config
from engine.training.gan import train_gan
from features.attributes import AttributeEncoder
from features.image_datasets import store_images
from features.readers import read_store
from models.classifier import ClassifierConfig
from models.gan import GANConfig
from models.io import config_to_dict, write_json

logger = logging.getLogger(__name__)


def choose_holdout(codes: np.ndarray, k: int, *, seed: int = 0, min_items: int = 4) -> np.ndarray:
    """(k, n_attributes) distinct combinations of ``codes`` (N, n_attributes) to hold out, drawn at random among
    those with at least ``min_items`` rows, such that every value each one holds is still held by another
    combination left in training. ValueError when fewer than k can be chosen so."""
    codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
    if k < 1:
        raise ValueError(f"hold out at least one combination; got {k}")
    combos, counts = np.unique(codes, axis=0, return_counts=True)
    # per attribute and value: how many distinct combinations (with any rows) still hold it
    holding = [dict(zip(*np.unique(combos[:, a], return_counts=True), strict=True)) for a in range(codes.shape[1])]
    candidates = combos[counts >= min_items]
    held: list[np.ndarray] = []
    for combo in candidates[np.random.default_rng(seed).permutation(len(candidates))]:
        if len(held) == k:
            break
        if all(holding[a][v] > 1 for a, v in enumerate(combo)):
            held.append(combo)
            for a, v in enumerate(combo):
                holding[a][v] -= 1
    if len(held) < k:
        raise ValueError(
            f"only {len(held)} combinations with at least {min_items} photos can be held out while every value stays "
            f"in training; ask for fewer (--holdout) or lower --min-items"
        )
    return np.stack(held)


def holdout_mask(codes: np.ndarray, held: np.ndarray) -> np.ndarray:
    """(N,) True for the rows of ``codes`` whose combination is one of ``held`` (K, n_attributes)."""
    codes, held = np.atleast_2d(codes), np.atleast_2d(held)
    return (codes[:, None, :] == held[None, :, :]).all(axis=2).any(axis=1)


def choose_seen(codes: np.ndarray, held: np.ndarray, *, seed: int = 0, min_items: int = 4) -> np.ndarray:
    """The comparison: for each held-out combination, a combination left in training (with at least ``min_items``
    rows) that differs from it in one attribute only, drawn at random, each used once; where none is left, any
    combination left in training. Matched so, the two groups ask for the same values, seen apart or together."""
    codes, held = np.atleast_2d(codes), np.atleast_2d(held)
    left = codes[~holdout_mask(codes, held)]
    combos, counts = np.unique(left, axis=0, return_counts=True)
    candidates = combos[counts >= min_items]
    rng = np.random.default_rng(seed + 1)
    taken = np.zeros(len(candidates), dtype=bool)
    out = []
    for combo in held:
        near = np.flatnonzero(((candidates != combo).sum(axis=1) == 1) & ~taken)
        pool = near if len(near) else np.flatnonzero(~taken)
        if not len(pool):
            break
        pick = int(rng.choice(pool))
        taken[pick] = True
        out.append(candidates[pick])
    return np.stack(out) if out else np.empty((0, codes.shape[1]), dtype=np.int64)


def _judged(predicted: np.ndarray, requested: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    out = {name: float((predicted[:, a] == requested[:, a]).mean()) for a, name in enumerate(names)}
    out["all"] = float((predicted == requested).all(axis=1).mean())
    return out


def _baselines(requested: np.ndarray, majority: np.ndarray, cards: tuple[int, ...], names: tuple[str, ...]) -> dict:
    chance = {name: 1.0 / c for name, c in zip(names, cards, strict=True)}
    chance["all"] = float(np.prod([1.0 / c for c in cards]))
    return {"chance": chance, "majority": _judged(np.broadcast_to(majority, requested.shape), requested, names)}


def evaluate_compositional(
    data: Path,
    *,
    holdout: int = 8,
    attributes: tuple[str, ...] | None = None,
    min_items: int = 4,
    steps: int = 400,
    seconds: float | None = 240.0,
    judge_epochs: int = 6,
    samples: int = 32,
    seed: int = 0,
    device: str = "cpu",
    out: Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Hold out ``holdout`` combinations, train the GAN without them, judge images of them beside seen ones."""
    started = time.perf_counter()
    store = read_store(Path(data))
    attrs = tuple(attributes or store.attributes)
    ds = store_images(store, size=64, attributes=attrs, min_count=5, show_progress=show_progress)
    encoder = AttributeEncoder(attrs).fit(ds.labels)
    codes = encoder.transform(ds.labels)
    cards = encoder.cardinalities
    held = choose_holdout(codes, holdout, seed=seed, min_items=min_items)
    seen = choose_seen(codes, held, seed=seed, min_items=min_items)
    out_of_training = holdout_mask(codes, held)
    train_rows = ~out_of_training
    logger.info(
        "holding out %d combinations (%d photos); the generator trains on %d photos of %d combinations",
        len(held),
        int(out_of_training.sum()),
        int(train_rows.sum()),
        len(np.unique(codes[train_rows], axis=0)),
    )

    preset = load_train_config("demo", overrides={"seed": seed})
    gan_config = GANConfig(attribute_names=attrs, cardinalities=cards, image_size=64, **config_to_dict(preset.gan))
    train_config = dataclasses.replace(preset.gan_training, steps=steps, max_seconds=seconds, device=device)
    gan = train_gan(
        ds.images[train_rows], codes[train_rows], gan_config, train_config, seed=seed, show_progress=show_progress
    )

    judge_train = ~ds.is_test
    judge_config = ClassifierConfig(attribute_names=attrs, cardinalities=cards, image_size=64)
    judge, judge_metrics = train_classifier(
        ds.images[judge_train],
        codes[judge_train],
        judge_config,
        ClassifierTrainConfig(epochs=judge_epochs, holdout=0.0, device=device),
        seed=seed + 23,
        show_progress=show_progress,
    )
    judge = judge.cpu().eval()
    generator = gan.generator_ema.cpu().eval()
    majority = np.array([np.bincount(codes[train_rows, a], minlength=c).argmax() for a, c in enumerate(cards)])
    training_combos = {tuple(int(v) for v in c) for c in np.unique(codes[train_rows], axis=0)}

    groups: dict[str, Any] = {}
    for group, combos in (("held_out", held), ("seen", seen)):
        requested = np.repeat(combos, samples, axis=0)
        images = generate_images(generator, requested, seed=seed + 7)
        predicted = judge_images(judge, images)
        real_rows = ds.is_test & holdout_mask(codes, combos)
        real = _judged(judge_images(judge, ds.images[real_rows]), codes[real_rows], attrs) if real_rows.any() else None
        per_combination = []
        for c, combo in enumerate(combos):
            rows = slice(c * samples, (c + 1) * samples)
            per_combination.append(
                {
                    "condition": encoder.decode(combo),
                    "photos": int(holdout_mask(codes, combo).sum()),
                    "generated": _judged(predicted[rows], requested[rows], attrs),
                }
            )
        groups[group] = {
            "combinations": len(combos),
            "images": len(requested),
            "generated": _judged(predicted, requested, attrs),
            "real_floor": real,
            "real_test_photos": int(real_rows.sum()),
            "judged_as_a_training_combination": float(
                np.mean([tuple(int(v) for v in p) in training_combos for p in predicted])
            ),
            **_baselines(requested, majority, cards, attrs),
            "per_combination": per_combination,
        }

    report = {
        "data": str(data),
        "attributes": list(attrs),
        "values": dict(zip(attrs, cards, strict=True)),
        "combinations_in_catalogue": len(np.unique(codes, axis=0)),
        "photos": len(codes),
        "holdout": {
            "combinations": [encoder.decode(c) for c in held],
            "photos_removed": int(out_of_training.sum()),
            "min_items": min_items,
            "seed": seed,
        },
        "generator": {
            "steps": gan.steps,
            "seconds": round(gan.seconds, 1),
            "stopped_early": gan.stopped_early,
            "train_photos": int(train_rows.sum()),
            "config": config_to_dict(gan_config),
        },
        "judge": {"epochs": judge_epochs, "train_photos": int(judge_train.sum()), **judge_metrics},
        "samples_per_combination": samples,
        **groups,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if out is not None:
        write_json(out, report, default=float)
    return report


def render(report: dict[str, Any]) -> str:
    """Judged accuracy of held-out and seen combinations beside the real floor, chance and majority."""
    attrs = [*report["attributes"], "all"]
    gen = report["generator"]
    lines = [
        f"Compositional generalisation on {report['data']}: {report['holdout']['photos_removed']} photos of "
        f"{len(report['holdout']['combinations'])} held-out combinations removed from the generator's training "
        f"({gen['train_photos']} photos left; GAN {gen['steps']} steps, {gen['seconds']:.0f} s)",
        f"{report['samples_per_combination']} images per combination, judged by a classifier trained on all real "
        "photos' training split",
        "",
        f"{'':<34}" + "".join(f"{a:>9}" for a in attrs),
    ]
    for group, label in (("held_out", "held-out combinations"), ("seen", "matched seen ones")):
        g = report[group]
        lines.append(f"{label + ': generated':<34}" + "".join(f"{g['generated'][a]:>9.3f}" for a in attrs))
        if g["real_floor"] is not None:
            label = f"  real test photos ({g['real_test_photos']})"
            lines.append(f"{label:<34}" + "".join(f"{g['real_floor'][a]:>9.3f}" for a in attrs))
        lines.append(f"{'  majority':<34}" + "".join(f"{g['majority'][a]:>9.3f}" for a in attrs))
    lines.append(f"{'chance':<34}" + "".join(f"{report['held_out']['chance'][a]:>9.3f}" for a in attrs))
    fallback = report["held_out"]["judged_as_a_training_combination"]
    lines.append(f"held-out images judged as a combination seen in training: {fallback:.3f}")
    lines += ["", "held-out combinations (generated, all attributes right):"]
    for c in report["held_out"]["per_combination"]:
        look = " ".join(c["condition"].values())
        lines.append(f"  {look:<32} {c['photos']:>3} photos  {c['generated']['all']:.3f}")
    return "\n".join(lines)
