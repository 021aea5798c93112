"""Two steps of making an image set, apart from the Personaliser that composes them.

:func:`choose_and_optimise` picks n images of a candidate pool by maximal marginal relevance on the shopper's
visual preference and tunes their latent codes (the set construction and preference maximisation steps of
:mod:`engine.serving.personaliser`); :func:`reason` writes the sentence a storefront can show for an image.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.serving.config import PersonaliserConfig
from engine.serving.preference import ImageGenerator, PreferenceOptimiser, mmr_relevance, select_diverse
from engine.serving.types import NearestItem

#: (images, raw generator output, unit-norm features) of rendered latent codes
Rendered = tuple[torch.Tensor, torch.Tensor, np.ndarray]


def choose_and_optimise(
    gen: ImageGenerator,
    pref: PreferenceOptimiser,
    cfg: PersonaliserConfig,
    vector: np.ndarray,  # (d,)
    codes: np.ndarray,  # (m, n_attributes) the pool's conditions
    z0: torch.Tensor,  # (m, z_dim) their seeded noise
    condition_p: np.ndarray,  # (m,) p(condition | shopper) of each candidate
    n: int,
) -> tuple[np.ndarray, torch.Tensor, np.ndarray, Rendered | None]:
    """(the n chosen pool rows, their optimised latent codes, their preference before optimisation, and
    their renders when already made).

    ``optimise_pool``: optimise every candidate, then choose; otherwise choose on the seeded candidates,
    then optimise only the chosen ones (half the cost)."""
    if cfg.optimise_pool:
        z = pref.optimise(vector, codes, z0)
        images, raw, unit = gen.render(z, codes)
        relevance = mmr_relevance(pref.scores(vector, raw, codes), condition_p, cfg.condition_weight)
        pick, _ = select_diverse(relevance, unit, n, mmr_lambda=cfg.mmr_lambda, min_distance=cfg.min_distance)
        _, raw0, _ = gen.render(z0[pick], codes[pick])
        return pick, z[pick], pref.scores(vector, raw0, codes[pick]), (images[pick], raw[pick], unit[pick])
    _, raw0, unit0 = gen.render(z0, codes)
    pref0_all = pref.scores(vector, raw0, codes)
    relevance = mmr_relevance(pref0_all, condition_p, cfg.condition_weight)
    pick, _ = select_diverse(relevance, unit0, n, mmr_lambda=cfg.mmr_lambda, min_distance=cfg.min_distance)
    return pick, pref.optimise(vector, codes[pick], z0[pick]), pref0_all[pick], None


def reason(
    attributes: tuple[str, ...] | list[str],
    strategy: str,
    condition: dict[str, str],
    p: float,
    *,
    support: int,
    top_items: int,
    basis: str,
    nearest: list[NearestItem],
    pref: float | None,
    pref0: float | None,
) -> str:
    """Why an image was made, in a sentence or two for the shopper."""
    look = " ".join(condition[a] for a in reversed(attributes) if a in condition)
    if strategy == "cold_start":
        why = f"A {look}: one of the catalogue's popular styles ({p:.0%} of popularity among the styles shown)."
    else:
        source = "your history and this session" if strategy == "session" else "your history"
        why = (
            f"A {look}: {support} of the {top_items} items that {source} suggests for you are {look} (weight {p:.0%})."
        )
    if pref is not None and pref0 is not None:
        why += f" Its look was tuned to your visual taste (preference score {pref0:.2f} → {pref:.2f})."
    if nearest:
        why += f" Real items {basis}, the ones you would like most: " + ", ".join(it.item_id for it in nearest) + "."
    return why
