"""``vitrine evaluate personalisation``: do preference-guided image sets serve real shoppers better?

Four measurements, each against a named baseline on the same shoppers:

1. Visual preference model — the bundle's training-time validation of f (``engine.training.visual``):
   AUC on withheld interactions (Kang et al. 2017) and Recall@K of cold (held-out) items.
2. Preference maximisation — for sampled shoppers, their personalised conditions with the serving noise
   z₀, then the optimised z: the mean preference score u · f(G(z, c)) (lift = (mean optimised − mean
   unoptimised) / |mean unoptimised|) and the realism cost, the relative change of the Fréchet distance (the
   generator evaluation harness's ``frechet_distance``) between the generated images and the real catalogue
   images, in the classifier's feature space; for each value of the realism knob λ.
3. Hidden-taste match (demo store only) — share of images whose judged class and colour are among the
   shopper's hidden top-2: full personalised sets (pool + preference maximisation + MMR) against
   (a) popular, non-personalised conditions and (b) conditioning alone (no preference maximisation).
4. Held-out purchases — the embeddings, the ranker (and f) refitted without the last ``test_days``; for
   shoppers who bought in those days, Recall of the distinct items grounded to their image set against what
   they bought, beside the served top-K (the ranker's) and the embeddings' top-K, with K = the number of
   grounded items.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from engine.artifacts.bundle import Bundle
from engine.evaluation.generator import frechet_distance
from engine.evaluation.served import judge, served_bundle
from engine.recommend.baselines import build_interactions
from engine.recommend.factors import fit_embeddings
from engine.recommend.ranker_files import save_ranker
from engine.recommend.ranking import paired_ratio_ci
from engine.recommend.reranker import fit_ranker
from engine.serving.config import PersonaliserConfig
from engine.serving.image_ids import stable_seed
from engine.serving.personaliser import Personaliser
from engine.training.classifier import embed_images
from engine.training.config import TrainConfig, build_config
from engine.training.visual import calibrate, encode_items, train_encoder, visual_data
from features.images import load_images
from features.pseudonyms import load_or_create_keyring
from features.readers import read_store
from features.split import time_split
from models.io import write_json
from models.visual import VisualComponent, factors_digest

logger = logging.getLogger(__name__)

GOALS = {"lift": 0.15, "fd_increase": 0.10, "grounded_recall_ratio": 0.95, "taste_ratio": 4.0}


def _catalogue_images(bundle: Bundle, size: int, *, show_progress: bool) -> np.ndarray:
    cat = bundle.catalogue[bundle.catalogue["has_image"]]
    if bundle.image_root is None:
        raise ValueError(f"bundle {bundle.version} does not say where its catalogue images are")
    images, ok = load_images([bundle.image_root / p for p in cat["image"]], size, show_progress=show_progress)
    if not ok.all():
        raise ValueError(f"{int((~ok).sum())} catalogue images no longer load from {bundle.image_root}")
    return images


def preference_lift(
    personaliser: Personaliser,
    real_features: np.ndarray,  # (N, feature_dim) raw classifier features of real catalogue images
    *,
    users: np.ndarray,
    n: int,
    realism_weights: tuple[float, ...],
    batch_size: int = 64,
    show_progress: bool = True,
) -> dict:
    """Mean preference score and Fréchet distance of optimised vs unoptimised images, per realism weight λ."""
    bundle = personaliser.bundle
    rows, codes, seeds = [], [], []
    for user in users:
        vector = personaliser.shoppers.user_vector(user)
        p = personaliser.conditions.distribution(vector)
        chosen = personaliser.conditions.choose(p, n, stable_seed(user, personaliser.version, "conditions", 0))
        codes.append(personaliser.conditions.codes[chosen])
        seeds += [stable_seed(user, personaliser.version, slot) for slot in range(n)]
        rows += [bundle.embeddings.user_index(user)] * n
    codes_all = np.concatenate(codes)
    u_all = bundle.embeddings.user_factors[np.asarray(rows)]
    z0_all = personaliser.generator.latents(seeds)

    def measure(z_all: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feats, scores, real = [], [], []
        for s in range(0, len(codes_all), 256):
            imgs = personaliser.generator.generate(codes_all[s : s + 256], [], z_all[s : s + 256])
            with torch.inference_mode():
                f = bundle.classifier.embed(imgs)
            feats.append(f.numpy())
            scores.append(personaliser.preference.scores(u_all[s : s + 256], f, codes_all[s : s + 256]))
            real.append(personaliser.preference.realism(imgs, codes_all[s : s + 256]))
        return np.concatenate(feats), np.concatenate(scores), np.concatenate(real)

    f0, s0, r0 = measure(z0_all)
    fd0 = frechet_distance(f0, real_features)
    out: dict = {
        "images": len(codes_all),
        "unoptimised": {"mean_score": float(s0.mean()), "realism": float(r0.mean()), "frechet_distance": fd0},
        "by_realism_weight": {},
    }
    for lam in realism_weights:
        zs = []
        for s in tqdm(
            range(0, len(codes_all), batch_size), desc=f"optimise λ={lam:g}", disable=not show_progress, leave=False
        ):
            zs.append(
                personaliser.preference.optimise(
                    u_all[s : s + batch_size],
                    codes_all[s : s + batch_size],
                    z0_all[s : s + batch_size],
                    realism_weight=lam,
                )
            )
        f1, s1, r1 = measure(torch.cat(zs))
        fd1 = frechet_distance(f1, real_features)
        out["by_realism_weight"][f"{lam:g}"] = {
            "mean_score": float(s1.mean()),
            # relative to |mean| so a negative baseline (u · f is a BPR ranking score, not bounded below) reads right
            "lift": float((s1.mean() - s0.mean()) / abs(s0.mean())) if s0.mean() != 0 else float("nan"),
            "lift_in_score_std": float((s1.mean() - s0.mean()) / s0.std()) if s0.std() > 0 else float("nan"),
            "share_of_images_improved": float((s1 > s0).mean()),
            "realism": float(r1.mean()),
            "frechet_distance": fd1,
            "fd_relative_change": float(fd1 / fd0 - 1.0) if fd0 > 0 else float("nan"),
        }
    return out


def hidden_taste_match(
    personaliser: Personaliser, tastes: dict, users: np.ndarray, *, n: int, top: int = 2, show_progress: bool = True
) -> dict:
    """Judged hidden-taste match of full personalised sets vs popular conditions vs conditioning alone."""
    bundle = personaliser.bundle
    enc = bundle.encoder
    cls_a, col_a = bundle.attributes.index("class"), bundle.attributes.index("colour")
    rates: dict[str, list[float]] = {"personalised": [], "conditioning_only": [], "popular": []}
    for user in tqdm(users, desc="hidden tastes", disable=not show_progress):
        taste = tastes[user]
        top_cls = {enc.values_["class"].index(v) for v in taste.top("class", top) if v in enc.values_["class"]}
        top_col = {enc.values_["colour"].index(v) for v in taste.top("colour", top) if v in enc.values_["colour"]}
        seeds = [stable_seed(user, personaliser.version, s) for s in range(n)]
        popular = personaliser.conditions.codes[
            personaliser.conditions.choose(
                personaliser.conditions.distribution(None), n, stable_seed(user, personaliser.version, "conditions", 0)
            )
        ]
        sets = {
            "personalised": personaliser.image_set(user, n, neighbours=1),
            "conditioning_only": personaliser.image_set(user, n, neighbours=1, optimise=False),
        }
        judged = {"popular": judge(bundle, personaliser.generator.generate(popular, seeds))}
        for name, result in sets.items():
            imgs = torch.cat([torch.from_numpy(_png_pixels(personaliser, img.image_id)) for img in result.images])
            judged[name] = judge(bundle, imgs)
        for name, j in judged.items():
            hit = np.isin(j[:, cls_a], list(top_cls)) & np.isin(j[:, col_a], list(top_col))
            rates[name].append(float(hit.mean()))
    out = {name: float(np.mean(v)) for name, v in rates.items()}
    out["users"] = len(users)
    out["ratio_to_popular"] = out["personalised"] / out["popular"] if out["popular"] > 0 else float("inf")
    out["ratio_to_conditioning_only"] = (
        out["personalised"] / out["conditioning_only"] if out["conditioning_only"] > 0 else float("inf")
    )
    return out


def _png_pixels(personaliser: Personaliser, image_id: str) -> np.ndarray:
    """(1, C, H, W) float image in [-1, 1] of an image id, regenerated exactly as served."""
    codes, seed, z = personaliser.image_inputs(image_id)
    latent = None if z is None else torch.from_numpy(z)[None]
    return personaliser.generator.generate(codes[None], [seed], latent).numpy()


def split_personaliser(
    bundle: Bundle,
    train_events,
    config: TrainConfig,
    catalogue_images: np.ndarray,
    personaliser_config: PersonaliserConfig,
    *,
    store_catalogue: pd.DataFrame,
    show_progress: bool,
) -> tuple[Personaliser, object]:
    """The bundle with embeddings, ranker (and f) refitted on ``train_events`` only: no test-period leakage.
    ``store_catalogue`` is the data's own catalogue (item_id, group, attributes, price), as training reads it."""
    data = build_interactions(train_events, config.weighting)
    emb = fit_embeddings(
        data.matrix, data.users.ids_, data.items.ids_, config.embeddings, seed=config.seed, show_progress=False
    )
    replaced: dict = {
        "embeddings": emb,
        "history": data.matrix.tocsr(),
        "embedding_rows": emb.item_indices(bundle.catalogue["item_id"].tolist()),
    }
    if bundle.visual is not None:
        cat = bundle.catalogue[bundle.catalogue["has_image"]]
        vdata = visual_data(
            bundle.classifier, catalogue_images, cat["item_id"].to_numpy(), bundle.codes[cat.index], emb.item_indices
        )
        enc = train_encoder(
            vdata,
            np.flatnonzero(vdata.matrix_cols >= 0),
            data.matrix,
            emb.user_factors,
            emb.item_factors,
            config.visual,
            seed=config.seed,
            show_progress=show_progress,
        )
        cal = calibrate(
            enc,
            bundle.classifier,
            bundle.generator,
            bundle.discriminator,
            vdata.codes,
            emb.user_factors,
            samples=config.visual.calibration_samples,
            seed=config.seed,
        )
        replaced["visual"] = VisualComponent(
            encoder=enc,
            calibration=cal,
            item_ids=vdata.item_ids,
            item_vectors=encode_items(enc, vdata),
            factors_digest=factors_digest(emb.item_factors),
        )
    with tempfile.TemporaryDirectory(prefix="vitrine-ranker-") as folder:  # the ranker as a bundle holds it
        ranker = fit_ranker(train_events, store_catalogue, config.weighting, config.ranker, seed=config.seed)
        save_ranker(ranker, Path(folder))
        split = Personaliser(dataclasses.replace(bundle, **replaced), personaliser_config, ranker_folder=Path(folder))
    return split, data


def grounded_recall(
    personaliser: Personaliser,
    data,
    test_events,
    *,
    users: int,
    n: int,
    neighbours: int,
    seed: int,
    show_progress: bool = True,
) -> dict:
    """Recall of the items grounded to each shopper's set vs the served top-K (the ranker's, or the embeddings'
    in a bundle without one) at K = the set's distinct grounded items, against held-out purchases."""
    bought = test_events[test_events["event_type"].astype(str) == "purchase"]
    by_user = bought.groupby("user_id")["item_id"].agg(lambda s: set(map(str, s)))
    warm = [u for u in by_user.index if personaliser.bundle.embeddings.user_index(u) >= 0]
    if not warm:
        raise ValueError("no shopper who bought in the held-out days is known to the refitted embeddings")
    rng = np.random.default_rng(seed)
    sample = rng.choice(warm, min(users, len(warm)), replace=False)
    emb = personaliser.bundle.embeddings
    rows: dict[str, list[float]] = {
        "grounded": [],
        "grounded_conditioning_only": [],
        "top_k": [],
        "top_k_embeddings": [],
        "top_k_with_image": [],
    }
    sizes, likeness = [], []
    with_image = np.zeros(len(emb.item_ids), dtype=bool)
    rows_img = emb.item_indices(list(personaliser.bundle.retriever.item_ids))
    with_image[rows_img[rows_img >= 0]] = True
    for user in tqdm(sample, desc="held-out purchases", disable=not show_progress):
        truth = by_user[user]
        got = {}
        for name, opt in (("grounded", None), ("grounded_conditioning_only", False)):
            s = personaliser.image_set(str(user), n, neighbours=neighbours, optimise=opt)
            got[name] = list(dict.fromkeys(it.item_id for img in s.images for it in img.nearest))
            if name == "grounded":
                likeness.append(np.mean([it.similarity for img in s.images for it in img.nearest]))
        k = len(got["grounded"])
        sizes.append(k)
        got["top_k"] = personaliser.recommended_items(str(user), k)  # what serving ranks: the ranker
        vec = personaliser.shoppers.user_vector(str(user))
        top, _ = emb.recommend(vec, k)
        got["top_k_embeddings"] = list(emb.item_ids[top])
        top_i, _ = emb.recommend(vec, k, exclude=np.flatnonzero(~with_image))
        got["top_k_with_image"] = list(emb.item_ids[top_i])
        for name, items in got.items():
            rows[name].append(len(truth & set(items)) / min(len(items), len(truth)) if items else 0.0)
    out: dict = {name: float(np.mean(v)) for name, v in rows.items()}
    out["users"] = len(sample)
    out["mean_k"] = float(np.mean(sizes))
    out["ratio_to_top_k"] = out["grounded"] / out["top_k"] if out["top_k"] > 0 else float("nan")
    out["ratio_ci95"] = paired_ratio_ci(np.array(rows["grounded"]), np.array(rows["top_k"]), seed=seed)
    out["mean_item_similarity"] = float(np.mean(likeness))  # cosine, image features of image and its items
    return out


def held_out_days(events, buyers: int, *, max_days: int = 14) -> int:
    """The fewest last days whose purchases come from at least ``buyers`` shoppers seen before them (at most
    ``max_days``): one H&M day holds about 2,000 such buyers, one demo-store day about 170."""
    last = events["timestamp"].max().floor("D")
    bought = events["event_type"].astype(str) == "purchase"
    for days in range(1, max_days + 1):
        cutoff = last - pd.Timedelta(days=days - 1)
        before = events.loc[events["timestamp"] < cutoff, "user_id"].unique()
        after = events.loc[bought & (events["timestamp"] >= cutoff), "user_id"].unique()
        if np.isin(after, before).sum() >= buyers:
            return days
    return max_days


def evaluate_personalisation(
    data_path: Path,
    artifacts: Path,
    *,
    version: str | None = None,
    users: int = 200,
    n: int = 8,
    neighbours: int = 4,
    test_days: int | None = None,
    realism_weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
    out: Path | None = None,
    show_progress: bool = True,
) -> dict:
    version, bundle = served_bundle(artifacts, version)
    if bundle.visual is None:
        raise ValueError(
            f"bundle {version} has no visual encoder; add one with `vitrine train visual --artifacts {artifacts}`"
        )
    config: TrainConfig = build_config(TrainConfig, bundle.manifest["config"], source=f"bundle {version}")
    pconfig = PersonaliserConfig()
    personaliser = Personaliser(bundle, pconfig)
    pseudonyms = load_or_create_keyring(artifacts)  # the bundle knows shoppers by their pseudonyms only
    rng = np.random.default_rng(config.seed)
    report: dict = {"bundle": version, "data": str(Path(data_path).resolve()), "goals": GOALS, "timings_seconds": {}}
    report["personaliser"] = dataclasses.asdict(pconfig)
    vis_manifest = (bundle.path / "visual" / "manifest.json").read_text()
    import json

    report["visual_validation"] = json.loads(vis_manifest)["metrics"]["validation"]

    t = time.perf_counter()
    images = _catalogue_images(bundle, config.image_size, show_progress=show_progress)
    real_feats = embed_images(bundle.classifier, images)
    sample = rng.choice(bundle.embeddings.user_ids, min(users, len(bundle.embeddings.user_ids)), replace=False)
    report["preference_maximisation"] = preference_lift(
        personaliser, real_feats, users=sample, n=n, realism_weights=realism_weights, show_progress=show_progress
    )
    report["timings_seconds"]["preference_maximisation"] = round(time.perf_counter() - t, 1)

    tastes_path = Path(data_path) / "hidden" / "tastes.json"
    if tastes_path.is_file():
        from engine.world import load_tastes

        t = time.perf_counter()
        tastes = {pseudonyms(user): taste for user, taste in load_tastes(Path(data_path)).items()}
        known = np.array([u for u in bundle.embeddings.user_ids if u in tastes])
        pick = rng.choice(known, min(users, len(known)), replace=False)
        report["hidden_taste_match"] = hidden_taste_match(personaliser, tastes, pick, n=n, show_progress=show_progress)
        report["timings_seconds"]["hidden_taste_match"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    store = read_store(data_path, pseudonyms=pseudonyms)
    test_days = test_days or held_out_days(store.events, users)
    split = time_split(store.events, test_days=test_days)
    split_p, data = split_personaliser(
        bundle, split.train, config, images, pconfig, store_catalogue=store.catalogue, show_progress=show_progress
    )
    report["held_out_purchases"] = {
        "split": {**split.describe(), "test_days": test_days},
        **grounded_recall(
            split_p,
            data,
            split.test,
            users=users,
            n=n,
            neighbours=neighbours,
            seed=config.seed,
            show_progress=show_progress,
        ),
    }
    report["timings_seconds"]["held_out_purchases"] = round(time.perf_counter() - t, 1)
    out = out or Path(artifacts) / "reports" / version / "personalisation.json"
    write_json(out, report)
    report["json_path"] = str(out)
    return report


def render(report: dict) -> str:
    lines = [f"Personalisation of bundle {report['bundle']}"]
    v = report["visual_validation"]
    auc, cold = v["auc"], v["cold_recall"]
    lines.append(
        f"\nVisual preference model f (validation split: {v['auc_users']} shoppers, {v['cold_items']} cold items)"
    )
    lines.append(
        f"  AUC (withheld interaction vs never-touched items): f {auc['visual_encoder']:.4f} · "
        f"CF factors {auc['embeddings']:.4f} · popularity {auc['popularity']:.4f} · random 0.5"
    )
    lines.append(
        f"  cold-item Recall@{v['k']} ({v['cold_users']} shoppers): f {cold['visual_encoder']:.4f} · "
        f"condition mean factor {cold['condition_mean_factor']:.4f} · condition popularity "
        f"{cold['condition_popularity']:.4f} · random {cold['random']:.4f}"
    )
    pm = report["preference_maximisation"]
    base = pm["unoptimised"]
    lines.append(
        f"\nPreference maximisation ({pm['images']} images; goal: lift ≥ 15% at FD increase ≤ 10%; lift is relative "
        "to |mean unoptimised score|, lift/σ to its standard deviation, which reads better when the mean is near 0)"
    )
    lines.append(
        f"  {'λ (realism)':<12} {'mean score':>10} {'lift':>8} {'lift/σ':>7} {'improved':>9} {'realism':>8} "
        f"{'FD':>8} {'ΔFD':>8}"
    )
    lines.append(
        f"  {'unoptimised':<12} {base['mean_score']:>10.4f} {'':>8} {'':>7} {'':>9} {base['realism']:>8.3f} "
        f"{base['frechet_distance']:>8.3f} {'':>8}"
    )
    for lam, r in pm["by_realism_weight"].items():
        lines.append(
            f"  {lam:<12} {r['mean_score']:>10.4f} {r['lift']:>+8.1%} {r['lift_in_score_std']:>+7.3f} "
            f"{r['share_of_images_improved']:>9.1%} "
            f"{r['realism']:>8.3f} {r['frechet_distance']:>8.3f} {r['fd_relative_change']:>+8.1%}"
        )
    if "hidden_taste_match" in report:
        h = report["hidden_taste_match"]
        lines.append(f"\nHidden-taste match ({h['users']} shoppers; judged class and colour in the hidden top-2)")
        lines.append(
            f"  personalised sets {h['personalised']:.3f} · conditioning only {h['conditioning_only']:.3f} · "
            f"popular {h['popular']:.3f}  →  {h['ratio_to_popular']:.2f}× popular (goal ≥ {GOALS['taste_ratio']:g}×), "
            f"{h['ratio_to_conditioning_only']:.2f}× conditioning only"
        )
    g = report["held_out_purchases"]
    lines.append(
        f"\nHeld-out purchases ({g['users']} shoppers, last {g['split'].get('test_days', '?')} day(s); "
        f"K = {g['mean_k']:.1f} distinct grounded items on average)"
    )
    lines.append(
        f"  recall: grounded {g['grounded']:.4f} · grounded, conditioning only {g['grounded_conditioning_only']:.4f} "
        f"· served top-K {g['top_k']:.4f} · embeddings' top-K {g.get('top_k_embeddings', float('nan')):.4f} "
        f"(of items with images {g['top_k_with_image']:.4f})  →  "
        f"{g['ratio_to_top_k']:.3f}× served top-K [95% CI {g['ratio_ci95'][0]:.2f}, {g['ratio_ci95'][1]:.2f}] "
        f"(goal ≥ {GOALS['grounded_recall_ratio']:.2f}×)"
    )
    lines.append(f"  mean cosine similarity of an image and its grounded items: {g['mean_item_similarity']:.3f}")
    return "\n".join(lines)
