"""How serving makes a set: the Personaliser's settings, each with the measurement behind its default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class PersonaliserConfig:
    # the shopper's top items that shape the condition distribution. 32 (= a set of 8 × 4 grounded items)
    # against 100, same bundles: hidden-taste match 4.50× popular against 4.04× (demo, 800 shoppers);
    # grounded recall on H&M 0.895× top-K against 0.852× (400 shoppers); the same preference lift in
    # standard deviations (0.108 σ against 0.107 σ at λ = 1; +18.9% against +24.0% of a higher mean)
    top_items: int = 32
    # rank with the bundle's ranker (candidate sources + LightGBM) where it has one: conditions come from the
    # shopper's ranked items and grounding puts them first. False: the embeddings' u · v, as bundles without one
    ranker: bool = True
    max_set_size: int = 32
    max_neighbours: int = 20
    # generations (fresh sets, re-rendered images) running at once per Service, and waiting for a place; beyond
    # both, a request is refused at once (engine.serving.limits.AdmissionGate). None: no limit (evaluations)
    max_concurrent_generations: int | None = None
    max_queued_generations: int = 0
    cache_size: int = 4096
    set_cache_size: int = 1024  # image sets, per (shopper, session state, n, neighbours, filters)
    # render each image's PNG as its set is made, so the storefront's image requests that follow find it cached
    # (one forward pass per image and a PNG encoding: 16% of a preference-maximised set's CPU on the demo
    # bundle). The batch job turns it off unless it stores PNGs: the set itself does not depend on it
    render_pngs: bool = True
    # preference maximisation (used when the bundle has a visual encoder and the shopper a vector)
    preference: bool = True
    pool_factor: int = 2  # candidates generated per image of the set
    optimise_pool: bool = False  # True: optimise all candidates, then choose; False: choose, then optimise (½ cost)
    # 2 steps at lr 0.25 vs 8 at 0.08 on the demo bundle (λ = 1, 480 images): lift +29% vs +35%, Fréchet
    # distance −5% vs −6%, set latency 301 vs 522 ms (p50, busy 2-core box); the last steps add little.
    steps: int = 2  # Adam steps on z
    lr: float = 0.25
    realism_weight: float = 1.0  # λ: 0 = personalisation only; larger keeps images nearer the catalogue
    prior_weight: float = 1.0  # β: the Gaussian prior of z
    # set construction and grounding
    mmr_lambda: float = 0.7  # MMR: weight of relevance against redundancy
    # MMR relevance of a candidate = the visual preference u · f(image) + condition_weight · log p(c | u), each
    # standardised over the pool: what the collaborative model says the shopper buys, beside what the image
    # looks like to the visual model (the weaker signal of the two). 0: the visual preference alone.
    # 0 → 1, same bundles and shoppers: grounded recall H&M (last day, 400 shoppers, GAN 800 steps) 0.946× →
    # 0.982× top-K; demo (7 days, 400 shoppers) 0.987× → 1.000×; hidden-taste match 4.32× → 4.28× popular.
    condition_weight: float = 1.0
    min_distance: float = 0.05  # minimum pairwise cosine distance of the set's image features
    # nearest items considered per kept item, for the shopper re-ranking: relevance against visual likeness.
    # Demo store, last 7 days held out, 800 shoppers, sets of 8 × 4 items, distinct items, calibrated cold
    # scores, FAISS neighbours only: pool 10 → grounded-item recall 0.70× plain top-K [95% CI 0.64, 0.77],
    # mean image–item cosine 0.956; 40 → 0.89× [0.84, 0.94]; 60 → 0.94× [0.90, 0.99], cosine 0.919;
    # 100 → 0.96×, 0.907 (nearest items alone: 0.28×, 0.980)
    grounding_pool: int = 60
    # True: the items of one set are distinct, handed out best shopper score first over all the set's pools,
    # each to the image it resembles most, so a set of n images leads to n·k different items; False: each
    # image keeps its own best k
    distinct_grounding: bool = True
    # True: an image's pool also holds the shopper's best items that share the image's condition on
    # ``condition_attributes`` (None: every attribute), found by attribute, not by pixels. Same shoppers as
    # above, pool 60: demo 0.93× → 0.98× top-K with ("class",), image–item cosine 0.919 → 0.898; H&M (one
    # week, last day held out, 400 shoppers, a GAN of 687 steps) 0.33× → 0.88× [0.82, 0.95], cosine 0.937 →
    # 0.789; matching class and colour there: 0.57×. The weaker the generator, the more this matters.
    condition_grounding: bool = True
    condition_attributes: tuple[str, ...] | None = ("class",)

    def __post_init__(self) -> None:
        if min(self.top_items, self.max_set_size, self.max_neighbours, self.cache_size, self.set_cache_size) < 1:
            raise ValueError("top_items, max_set_size, max_neighbours and the cache sizes must be positive")
        if (self.max_concurrent_generations is not None and self.max_concurrent_generations < 1) or (
            self.max_queued_generations < 0
        ):
            raise ValueError("max_concurrent_generations must be >= 1 (or None) and max_queued_generations >= 0")
        if self.pool_factor < 1 or self.grounding_pool < 1 or self.steps < 0 or self.lr <= 0:
            raise ValueError("pool_factor and grounding_pool must be >= 1, steps >= 0 and lr > 0")
        if self.realism_weight < 0 or self.prior_weight < 0:
            raise ValueError("realism_weight and prior_weight must be >= 0")
        if self.condition_weight < 0:
            raise ValueError("condition_weight must be >= 0")
        if not 0.0 <= self.mmr_lambda <= 1.0 or not 0.0 <= self.min_distance < 2.0:
            raise ValueError("mmr_lambda must be in [0, 1] and min_distance in [0, 2)")
