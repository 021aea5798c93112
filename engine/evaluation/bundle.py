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
from tqdm.auto import tqdm

from engine.artifacts.bundle import Bundle
from engine.evaluation.generation import contact_sheet, generation_report
from engine.evaluation.recommenders import ServedRanker
from engine.evaluation.served import judge, served_bundle
from engine.recommend.baselines import build_interactions
from engine.recommend.ranking import build_task, evaluate
from engine.serving.image_ids import stable_seed
from engine.serving.personaliser import Personaliser
from engine.training.config import TrainConfig, build_config
from engine.training.pipeline import validate_embeddings
from features.pseudonyms import load_or_create_keyring
from features.readers import read_store
from features.schema import StoreData
from features.split import time_split
from models.io import write_json

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class EvaluationReport:
    data: dict
    json_path: Path
    contact_sheet_path: Path
    lines: list[str] = field(default_factory=list)

    def render(self) -> str:
        return "\n".join(self.lines)


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


def _fmt(x: float) -> str:
    return f"{x:.4f}"


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
    tastes_path = Path(data_path) / "hidden" / "tastes.json"
    generation, generation_lines = generation_report(
        personaliser, store, config, demo=tastes_path.is_file(), show_progress=show_progress
    )
    timings["generation"] = round(time.perf_counter() - t, 1)
    report["generation"] = generation
    lines += generation_lines

    if tastes_path.is_file():
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
