"""``vitrine evaluate``: measure a bundle against named baselines on the same data; print and write JSON.

1. Ranking — the bundle's embedding config and its ranker (as serving loads it) refit on all but the last
   ``test_days``; Recall/NDCG/MAP@K on the held-out purchases against global popularity.
2. Generation — images for every catalogue condition, judged by the attribute classifier (trained on
   real catalogue images only): the share showing the requested class / colour / pattern, beside the
   classifier's accuracy on held-out real images (the ceiling) and chance; the Fréchet distance beside its
   real-vs-real floor and the checkerboard ratio (``engine.evaluation.fidelity``); on a demo store, its targets.
3. Personalisation (demo store, which has hidden tastes) — for sampled shoppers, the share of their
   generated images whose *judged* class and colour are among their hidden top-2 classes and top-2
   colours, against (a) the non-personalised set (popular conditions), and (b) uniformly random
   conditions.
4. A contact sheet PNG: one row per class, generated samples across colours and patterns.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from engine.artifacts.bundle import Bundle, load_bundle
from engine.artifacts.registry import ArtifactRegistry
from engine.evaluation.fidelity import demo_targets, fidelity_metrics
from engine.evaluation.recommenders import ServedRanker
from engine.recommend.baselines import build_interactions
from engine.recommend.ranking import build_task, evaluate
from engine.serving.image_ids import stable_seed
from engine.serving.personaliser import Personaliser
from engine.training.classifier import predict
from engine.training.config import TrainConfig, build_config
from engine.training.pipeline import validate_embeddings, visual_catalogue
from features.pseudonyms import load_or_create_keyring
from features.readers import read_store
from features.schema import StoreData
from features.split import time_split
from models.io import write_json
from models.pixels import to_uint8

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class EvaluationReport:
    data: dict
    json_path: Path
    contact_sheet_path: Path
    lines: list[str] = field(default_factory=list)

    def render(self) -> str:
        return "\n".join(self.lines)


def judge(bundle: Bundle, images: torch.Tensor) -> np.ndarray:
    """(N, n_attributes) codes predicted by the bundle's classifier."""
    return np.stack(predict(bundle.classifier, images), axis=1)


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


def personalisation_metrics(
    personaliser: Personaliser,
    tastes: dict,
    *,
    users: int,
    n: int = 8,
    top: int = 2,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """Hidden-taste match of judged images: personalised vs popular vs random conditions."""
    bundle = personaliser.bundle
    attrs = bundle.attributes
    cls_a, col_a = attrs.index("class"), attrs.index("colour")
    known = [u for u in bundle.embeddings.user_ids if u in tastes]
    if not known:
        raise ValueError("no shopper of the hidden tastes file is known to the embedding model")
    rng = np.random.default_rng(seed)
    sample = rng.choice(known, min(users, len(known)), replace=False)
    enc = bundle.encoder
    rates = {"personalised": [], "popular": [], "random": []}
    requested = {"personalised": [], "popular": [], "random": []}
    for user in tqdm(sample, desc="personalised sets", disable=not show_progress):
        taste = tastes[user]
        top_cls = {enc.values_["class"].index(v) for v in taste.top("class", top) if v in enc.values_["class"]}
        top_col = {enc.values_["colour"].index(v) for v in taste.top("colour", top) if v in enc.values_["colour"]}
        seeds = [stable_seed(user, personaliser.version, s) for s in range(n)]
        sources = {
            "personalised": personaliser.condition_distribution(  # as serving draws them
                personaliser.shoppers.user_vector(user), personaliser.rank(user)
            )[0],
            "popular": personaliser.conditions.distribution(None),
            "random": np.full(len(personaliser.conditions.codes), 1.0 / len(personaliser.conditions.codes)),
        }
        for name, p in sources.items():
            codes = personaliser.conditions.codes[personaliser.conditions.choose(p, n, stable_seed(user, name))]
            judged = judge(bundle, personaliser.generator.generate(codes, seeds))
            hit = np.array([c in top_cls for c in judged[:, cls_a]]) & np.array(
                [c in top_col for c in judged[:, col_a]]
            )
            rates[name].append(hit.mean())
            req = np.array([c in top_cls for c in codes[:, cls_a]]) & np.array([c in top_col for c in codes[:, col_a]])
            requested[name].append(req.mean())
    out = {"users": len(sample), "set_size": n, "top": top}
    for name in rates:
        out[name] = {
            "judged_match": float(np.mean(rates[name])),
            "requested_match": float(np.mean(requested[name])),
        }
    base = out["popular"]["judged_match"]
    out["lift_over_popular"] = float(out["personalised"]["judged_match"] / base) if base > 0 else float("inf")
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


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def served_bundle(artifacts: Path, version: str | None = None) -> tuple[str, Bundle]:
    """(version, bundle): the bundle ``version`` under ``artifacts``, or the one that serves (the registry's
    pointer) when ``version`` is None, loaded and checked as serving loads it."""
    registry = ArtifactRegistry(artifacts)
    version = version or registry.current()
    if version is None:
        raise ValueError(f"no serving bundle under {artifacts}; pass --version or promote one")
    return version, load_bundle(registry.path(version))


def served_ranker_metrics(store: StoreData, config: TrainConfig) -> dict:
    """The bundle's ranker config fitted on all but the last ``test_days`` (as training fits it), written and
    loaded as serving loads it, scored on the held-out days: the same split as ``validate_embeddings``."""
    split = time_split(store.events, test_days=config.test_days)
    data = build_interactions(split.train, config.weighting)
    task = build_task(split.test, data.users.index_, data.items.index_)
    ranker = ServedRanker(config.ranker, catalogue=store.catalogue, weighting=config.weighting, seed=config.seed)
    return evaluate(ranker.fit(data).recommend, task, config.eval_k)


def evaluate_bundle(
    data_path: Path,
    artifacts: Path,
    *,
    version: str | None = None,
    out_dir: Path | None = None,
    users: int = 300,
    show_progress: bool = True,
) -> EvaluationReport:
    version, bundle = served_bundle(artifacts, version)
    personaliser = Personaliser(bundle)
    config: TrainConfig = build_config(TrainConfig, bundle.manifest["config"], source=f"bundle {version}")
    out_dir = out_dir or Path(artifacts) / "reports" / version
    timings: dict[str, float] = {}
    report: dict = {"bundle": version, "data": str(Path(data_path).resolve())}
    lines = [f"Vitrine evaluation of bundle {version}"]

    t = time.perf_counter()
    pseudonyms = load_or_create_keyring(artifacts)  # the bundle knows shoppers by their pseudonyms only
    store = read_store(data_path, pseudonyms=pseudonyms)
    ranking = validate_embeddings(store, config, show_progress=show_progress)
    if personaliser.ranker is not None:  # what serving ranks with, refitted on the same split as the bundle ranks
        ranking["results"]["ranker"] = served_ranker_metrics(store, config)
    timings["ranking"] = round(time.perf_counter() - t, 1)
    report["ranking"] = ranking
    k = ranking["k"]
    lines.append(
        f"\nRanking on the last {config.test_days} days ({ranking['split']['cutoff']} on), purchases as targets:"
    )
    lines.append(
        f"  {'model':<12} {'users':<6} {'recall@' + str(k):>10} {'ndcg@' + str(k):>10} "
        f"{'map@' + str(k):>10} {'coverage':>9}"
    )
    for model, res in ranking["results"].items():
        for group in ("warm", "all"):
            m = res[group]
            lines.append(
                f"  {model:<12} {group:<6} {_fmt(m[f'recall@{k}']):>10} {_fmt(m[f'ndcg@{k}']):>10} "
                f"{_fmt(m[f'map@{k}']):>10} {m['coverage']:>9.3f}"
            )

    t = time.perf_counter()
    gen = generation_metrics(personaliser, seed=config.seed)
    timings["generation"] = round(time.perf_counter() - t, 1)
    cls_metrics = bundle_manifest_metrics(bundle, "classifier")
    report["generation"] = {"generated": gen, "classifier_on_real_holdout": cls_metrics}
    lines.append(f"\nGeneration ({gen['images']} images over every catalogue condition), judged by the classifier:")
    lines.append(f"  {'attribute':<10} {'generated':>10} {'real ceiling':>13} {'chance':>8}")
    for name in bundle.attributes:
        real = cls_metrics.get(f"accuracy_{name}")
        lines.append(
            f"  {name:<10} {gen[f'accuracy_{name}']:>10.3f} "
            f"{(f'{real:.3f}' if real is not None else 'n/a'):>13} {gen[f'chance_{name}']:>8.3f}"
        )
    t = time.perf_counter()
    vis = visual_catalogue(store, config, show_progress=show_progress)
    fid = fidelity_metrics(personaliser, vis.images, vis.codes[vis.items["has_image"].to_numpy()], seed=config.seed)
    timings["fidelity"] = round(time.perf_counter() - t, 1)
    report["generation"]["fidelity"] = fid
    lines.append(
        f"  Fréchet distance {fid['frechet_distance']:.2f}, real floor {fid['frechet_floor']:.2f} "
        f"({fid['frechet_ratio']:.1f}× the floor; {fid['images_per_half']} images a side, classifier features)"
    )
    lines.append(
        f"  checkerboard ratio {fid['checkerboard_ratio']:.2f} (energy at the Nyquist frequencies, generated "
        "over real; about 1 without the artefact)"
    )

    tastes_path = Path(data_path) / "hidden" / "tastes.json"
    if tastes_path.is_file():  # a demo store: its generator targets too
        targets = demo_targets(gen, fid)
        report["generation"]["demo_targets"] = targets
        lines.append("  demo-store targets:")
        for row in targets:
            lines.append(f"    {row['target']:<40} {row['value']:>8.3f}  {'PASS' if row['met'] else 'MISS'}")

        from engine.world import load_tastes

        t = time.perf_counter()
        pers = personalisation_metrics(
            personaliser,
            {pseudonyms(user): taste for user, taste in load_tastes(Path(data_path)).items()},
            users=users,
            seed=config.seed,
            show_progress=show_progress,
        )
        timings["personalisation"] = round(time.perf_counter() - t, 1)
        report["personalisation"] = pers
        lines.append(
            f"\nPersonalisation ({pers['users']} shoppers × {pers['set_size']} images): share of images whose "
            f"judged class is in the shopper's hidden top-{pers['top']} classes and colour in their "
            f"top-{pers['top']} colours"
        )
        lines.append(f"  {'conditions':<13} {'judged':>8} {'requested':>10}")
        for name in ("personalised", "popular", "random"):
            lines.append(f"  {name:<13} {pers[name]['judged_match']:>8.3f} {pers[name]['requested_match']:>10.3f}")
        lines.append(f"  personalised / popular = {pers['lift_over_popular']:.2f}×")
    else:
        lines.append("\nPersonalisation: skipped (the data has no hidden tastes; only the demo store has them)")

    sheet = contact_sheet(personaliser, out_dir / "contact_sheet.png", seed=config.seed)
    report["timings_seconds"] = timings
    json_path = out_dir / "evaluation.json"
    write_json(json_path, report)
    logger.info("evaluation written to %s", json_path)
    return EvaluationReport(data=report, json_path=json_path, contact_sheet_path=sheet, lines=lines)


def bundle_manifest_metrics(bundle: Bundle, component: str) -> dict:
    path = bundle.path / component / "manifest.json"
    return json.loads(path.read_text()).get("metrics", {})
