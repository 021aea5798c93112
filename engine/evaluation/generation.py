"""Does the served generator make what was asked, and look like its catalogue? ``vitrine evaluate generation``,
and the generation part of ``vitrine evaluate``.

Images come from the Personaliser's generator, as serving makes them (a cascade included), for every catalogue
condition. The bundle's classifier (trained on real catalogue images only) judges each one's class, colour and
pattern, beside its own accuracy on held-out real images (the ceiling) and chance; the Fréchet distance beside
its real-vs-real floor and the checkerboard ratio come from :mod:`engine.evaluation.fidelity`. On a demo store
the generator's targets are checked; a contact sheet shows one row per class.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.evaluation.fidelity import demo_targets, fidelity_metrics
from engine.evaluation.served import judge, served_bundle
from engine.serving.image_ids import stable_seed
from engine.serving.personaliser import Personaliser
from engine.training.classifier import holdout_split
from engine.training.config import TrainConfig, build_config
from engine.training.generator import base_images
from engine.training.pipeline import visual_catalogue
from features.readers import read_store
from features.schema import StoreData
from models.cascade import CascadeGenerator
from models.io import read_json, write_json
from models.pixels import to_float, to_tensor_images, to_uint8
from models.sr import run_net

logger = logging.getLogger(__name__)


def generation_metrics(
    personaliser: Personaliser, *, per_condition: int = 2, max_images: int = 1024, seed: int = 0
) -> dict:
    bundle = personaliser.bundle
    conds = personaliser.conditions.codes
    rng = np.random.default_rng(seed)
    reps = max(1, min(per_condition, max_images // max(1, len(conds))))
    pick = np.repeat(np.arange(len(conds)), reps)
    if len(pick) > max_images:
        pick = rng.choice(pick, max_images, replace=False)
    codes = conds[pick]
    preds = []
    for s in range(0, len(codes), 128):
        batch = codes[s : s + 128]
        imgs = personaliser.generator.generate(batch, [stable_seed("eval", seed, s + j) for j in range(len(batch))])
        preds.append(judge(bundle, imgs))
    pred = np.concatenate(preds)
    out = {"images": len(codes)}
    for a, name in enumerate(bundle.attributes):
        out[f"accuracy_{name}"] = float((pred[:, a] == codes[:, a]).mean())
        out[f"chance_{name}"] = 1.0 / bundle.encoder.cardinalities[a]
    out["accuracy_all"] = float((pred == codes).all(axis=1).mean())
    return out


def contact_sheet(personaliser: Personaliser, path: Path, *, columns: int = 8, seed: int = 0) -> Path:
    """Rows = classes, columns = generated samples cycling through the class's catalogue conditions."""
    conds = personaliser.conditions.codes
    rows = []
    for c in range(personaliser.bundle.encoder.cardinalities[0]):
        options = conds[conds[:, 0] == c]
        if len(options) == 0:
            continue
        pick = options[np.random.default_rng(seed + c).choice(len(options), columns, replace=len(options) < columns)]
        imgs = to_uint8(
            personaliser.generator.generate(pick, [stable_seed("sheet", seed, c, j) for j in range(columns)])
        )
        rows.append(np.concatenate(list(imgs), axis=1))
    sheet = np.concatenate(rows, axis=0)
    if sheet.shape[-1] == 1:
        sheet = sheet[..., 0]
    img = Image.fromarray(sheet)
    img = img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def through_upscaler(personaliser: Personaliser, images: np.ndarray, codes: np.ndarray, config: TrainConfig) -> dict:
    """A cascade's ceiling: the classifier's accuracy on its held-out real images after the cascade's round trip
    (reduced to the base size, enlarged by the upscaler), beside its accuracy on them as they are. Generated
    images cannot be judged better than real ones that went the same way. Empty for a plain generator."""
    generator = personaliser.bundle.generator
    if not isinstance(generator, CascadeGenerator):
        return {}
    rng = torch.Generator().manual_seed(config.seed)  # the classifier's own split (train_classifier)
    hold = holdout_split(len(images), config.classifier_training.holdout, rng)[0].numpy()
    real, wanted = images[hold], codes[hold]
    upscaled = run_net(generator.upscaler, base_images(real, generator.scale))
    out: dict = {"images": len(hold)}
    for name, batch in (("as_they_are", real), ("through_upscaler", upscaled)):
        judged = judge(personaliser.bundle, to_float(to_tensor_images(batch)))
        out[name] = {
            a: float((judged[:, k] == wanted[:, k]).mean()) for k, a in enumerate(personaliser.bundle.attributes)
        }
    return out


def generation_report(
    personaliser: Personaliser, store: StoreData, config: TrainConfig, *, demo: bool, show_progress: bool
) -> tuple[dict, list[str]]:
    """Judged accuracy, fidelity and (on a demo store, ``demo``) the targets, as a report and printable lines."""
    bundle = personaliser.bundle
    gen = generation_metrics(personaliser, seed=config.seed)
    ceiling = read_json(bundle.path / "classifier" / "manifest.json").get("metrics", {})
    lines = [f"\nGeneration ({gen['images']} images over every catalogue condition), judged by the classifier:"]
    lines.append(f"  {'attribute':<10} {'generated':>10} {'real ceiling':>13} {'chance':>8}")
    for name in bundle.attributes:
        real = ceiling.get(f"accuracy_{name}")
        lines.append(
            f"  {name:<10} {gen[f'accuracy_{name}']:>10.3f} "
            f"{(f'{real:.3f}' if real is not None else 'n/a'):>13} {gen[f'chance_{name}']:>8.3f}"
        )
    vis = visual_catalogue(store, config, show_progress=show_progress)
    fid = fidelity_metrics(personaliser, vis.images, vis.codes[vis.items["has_image"].to_numpy()], seed=config.seed)
    lines.append(
        f"  Fréchet distance {fid['frechet_distance']:.2f}, real floor {fid['frechet_floor']:.2f} "
        f"({fid['frechet_ratio']:.1f}× the floor; {fid['images_per_half']} images a side, classifier features)"
    )
    lines.append(
        f"  checkerboard ratio {fid['checkerboard_ratio']:.2f} (energy at the Nyquist frequencies, generated "
        "over real; about 1 without the artefact)"
    )
    image_codes = vis.codes[vis.items["has_image"].to_numpy()]
    ceiling_through = through_upscaler(personaliser, vis.images, image_codes, config)
    if ceiling_through:
        shown = ", ".join(
            f"{a} {ceiling_through['through_upscaler'][a]:.3f} ({ceiling_through['as_they_are'][a]:.3f})"
            for a in bundle.attributes
        )
        lines.append(f"  held-out real images through the cascade's upscaler (as they are): {shown}")
    generator = read_json(bundle.path / "generator" / "manifest.json")
    report = {
        "generated": gen,
        "classifier_on_real_holdout": ceiling,
        "fidelity": fid,
        "cascade_ceiling": ceiling_through,
        "generator": {**generator.get("metrics", {}), "continued_from": generator.get("continued_from")},
    }
    if demo:
        report["demo_targets"] = demo_targets(gen, fid)
        lines.append("  demo-store targets:")
        for row in report["demo_targets"]:
            lines.append(f"    {row['target']:<40} {row['value']:>8.3f}  {'PASS' if row['met'] else 'MISS'}")
    return report, lines


def evaluate_generation(
    data_path: Path,
    artifacts: Path,
    *,
    version: str | None = None,
    out_dir: Path | None = None,
    show_progress: bool = True,
) -> tuple[dict, list[str], Path]:
    """``vitrine evaluate generation``: the generation part of ``vitrine evaluate`` alone, written to
    ``generation.json`` beside a contact sheet; returns the report, its lines and the JSON's path."""
    version, bundle = served_bundle(artifacts, version)
    personaliser = Personaliser(bundle)
    config: TrainConfig = build_config(TrainConfig, bundle.manifest["config"], source=f"bundle {version}")
    demo = (Path(data_path) / "hidden" / "tastes.json").is_file()
    report, lines = generation_report(
        personaliser, read_store(data_path), config, demo=demo, show_progress=show_progress
    )
    out_dir = out_dir or Path(artifacts) / "reports" / version
    report = {"bundle": version, "data": str(Path(data_path).resolve()), **report}
    json_path = out_dir / "generation.json"
    write_json(json_path, report)
    contact_sheet(personaliser, out_dir / "contact_sheet.png", seed=config.seed)
    return report, [f"Generation by bundle {version}", *lines], json_path
