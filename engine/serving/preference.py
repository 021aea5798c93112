"""Images made for a shopper: seeded generation, preference maximisation, and diverse set construction.

With a visual encoder in the bundle (``models.visual``) and a shopper vector u, a few Adam steps on the latent
codes of all candidates at once maximise (Kang et al., ICDM 2017, section IV)
    J(z) = û · f(G(z, c)) / σ_s  +  λ · (D(G(z, c), c) − μ_D) / σ_D  −  β · ‖z‖² / (2·dim z)
— the shopper's visual preference, the discriminator's realism (λ = ``realism_weight`` is the one knob trading
personalisation against realism), and the Gaussian prior of z; σ_s, μ_D, σ_D are calibrated at training time.

The set is then chosen by maximal marginal relevance (Carbonell & Goldstein 1998) on the preference score plus
the condition's log p(c | u), with cosine similarity of image features as redundancy and a hard minimum
pairwise feature distance (relaxed only when the pool cannot meet it).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.artifacts.bundle import Bundle
from engine.serving.config import PersonaliserConfig
from models.pixels import to_uint8


def _codes(codes: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(codes), dtype=torch.long)


class ImageGenerator:
    """The bundle's EMA generator behind seeded noise: the same (condition, seed) gives the same image."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.z_dim: int = bundle.generator.config.z_dim

    def latents(self, seeds: list[int]) -> torch.Tensor:
        """(n, z_dim) standard normal noise, each row seeded by its own seed."""
        return torch.stack([torch.randn(self.z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])

    @torch.inference_mode()
    def generate(self, codes: np.ndarray, seeds: list[int], z: torch.Tensor | None = None) -> torch.Tensor:
        """(n, n_attr) codes and n seeds → (n, C, H, W) images in [-1, 1]; each depends only on its own pair.

        ``z`` (n, z_dim), when given, replaces the seeded noise (optimised latent codes)."""
        z = self.latents(seeds) if z is None else z
        return self.bundle.generator(z, _codes(codes))

    @torch.inference_mode()
    def pixels(self, z: torch.Tensor, codes: np.ndarray) -> np.ndarray:
        """(n, H, W, C) uint8 pixels of G(z, c) for z (n, z_dim) and codes (n, n_attr), one image at a time: how
        every image that an id names is rendered for its PNG, whichever path (a fresh set, a new product's images,
        the id alone) and whichever host renders it. A batched forward pass sums in another order than a single
        one (about 1e-7 apart), which moves one pixel by one level in some images (4 of 48 on the tiny bundle), so
        a PNG would otherwise depend on whether the host that answers made the set."""
        return np.concatenate(
            [to_uint8(self.bundle.generator(z[i : i + 1], _codes(codes[i : i + 1]))) for i in range(len(z))]
        )

    @torch.inference_mode()
    def render(self, z: torch.Tensor, codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Images G(z, c), their raw classifier features, and those features at unit length (numpy)."""
        images = self.bundle.generator(z, _codes(codes))
        raw = self.bundle.classifier.embed(images)
        return images, raw, torch.nn.functional.normalize(raw, dim=1).numpy()


class PreferenceOptimiser:
    """The shopper's visual preference for images, and latent codes optimised to raise it (see the module)."""

    def __init__(self, bundle: Bundle, config: PersonaliserConfig) -> None:
        self.bundle = bundle
        self.config = config
        self.visual = bundle.visual
        if self.visual is not None and bundle.discriminator is not None:
            for module in (bundle.generator, bundle.discriminator, bundle.classifier, self.visual.encoder):
                module.requires_grad_(False)  # gradients flow to the latent codes only

    @property
    def available(self) -> bool:
        """Whether sets for shoppers with a vector are made by preference maximisation."""
        return self.config.preference and self.visual is not None and self.bundle.discriminator is not None

    def scores(self, user_vector: np.ndarray, features: torch.Tensor, codes: np.ndarray) -> np.ndarray:
        """u · f(x) for (B, feature_dim) raw image features of images made for ``codes``; u (d,) or (B, d)."""
        if self.visual is None:
            raise ValueError("this bundle has no visual encoder; train one with `vitrine train visual`")
        enc = self.visual.encoder
        with torch.inference_mode():
            fx = enc(features, _codes(codes) if enc.config.uses_attributes else None).numpy()
        u = np.asarray(user_vector, dtype=np.float32)
        return fx @ u if u.ndim == 1 else (fx * u).sum(1)

    def optimise(
        self,
        user_vector: np.ndarray,  # (d,), or (B, d): one shopper per row
        codes: np.ndarray,  # (B, n_attributes)
        z0: torch.Tensor,  # (B, z_dim)
        *,
        steps: int | None = None,
        realism_weight: float | None = None,
    ) -> torch.Tensor:
        """Latent codes that raise the shopper's preference for G(z, c) while D keeps them realistic.

        Maximises J(z) of the module docstring with Adam from ``z0``, all rows at once; returns (B, z_dim),
        rounded to float16 (what the image id stores), so the images shown are the ones an id regenerates.
        Deterministic for the same inputs and thread count (no random step).
        """
        visual, disc = self.visual, self.bundle.discriminator
        if visual is None or disc is None:
            raise ValueError("preference maximisation needs a bundle with a visual encoder")
        cfg = self.config
        steps = cfg.steps if steps is None else steps
        lam = cfg.realism_weight if realism_weight is None else realism_weight
        cal = visual.calibration
        u = torch.as_tensor(np.asarray(user_vector, dtype=np.float32))
        u_hat = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        u_hat = u_hat.expand(len(codes), -1) if u_hat.ndim == 1 else u_hat
        y = _codes(codes)
        y_enc = y if visual.encoder.config.uses_attributes else None
        z = z0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=cfg.lr)
        with torch.enable_grad():
            for _ in range(steps):
                x = self.bundle.generator(z, y)
                score = (visual.encoder(self.bundle.classifier.embed(x), y_enc) * u_hat).sum(1) / cal.score_std
                objective = score - cfg.prior_weight * z.pow(2).mean(1) / 2
                if lam:
                    objective = objective + lam * (disc(x, y) - cal.realism_mean) / cal.realism_std
                opt.zero_grad(set_to_none=True)
                (-objective.sum()).backward()
                opt.step()
        return z.detach().to(torch.float16).to(torch.float32)

    @torch.inference_mode()
    def realism(self, images: torch.Tensor, codes: np.ndarray) -> np.ndarray:
        """Standardised discriminator logits (0 = a typical generated image, higher = more realistic)."""
        if self.visual is None or self.bundle.discriminator is None:
            raise ValueError("this bundle has no visual encoder, so no calibrated realism")
        cal = self.visual.calibration
        d = self.bundle.discriminator(images, _codes(codes))
        return ((d - cal.realism_mean) / cal.realism_std).numpy()


# ---- set construction ---------------------------------------------------------------------------------
def standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean()) / (x.std() + 1e-8)


def mmr_relevance(preference: np.ndarray, condition_p: np.ndarray, condition_weight: float) -> np.ndarray:
    """MMR relevance of pool candidates: the standardised visual preference u · f(image) plus
    ``condition_weight`` × the standardised log p(condition | shopper) (a zero p ranks below every other)."""
    rel = standardise(preference)
    p = np.asarray(condition_p, dtype=np.float64)
    if condition_weight > 0 and (p > 0).any():
        logp = np.log(np.where(p > 0, p, 1.0))
        logp = np.where(p > 0, logp, logp[p > 0].min() - 1.0)
        rel = rel + condition_weight * standardise(logp)
    return rel


def select_diverse(
    relevance: np.ndarray, features: np.ndarray, n: int, *, mmr_lambda: float, min_distance: float
) -> tuple[np.ndarray, float]:
    """n of the m candidates by MMR (Carbonell & Goldstein 1998) with a hard minimum pairwise distance.

    relevance: (m,) higher is better, standardised inside; features: (m, d) unit vectors (cosine).
    Greedy: the next pick maximises λ·rel − (1 − λ)·max cos(pick, chosen) among the candidates at
    cosine distance ≥ ``min_distance`` from every chosen one; when none is left, among all (the
    constraint is relaxed rather than the set shortened). Returns (chosen rows, min pairwise distance).
    """
    m = len(relevance)
    if n > m:
        raise ValueError(f"cannot choose {n} images from {m} candidates")
    rel = standardise(relevance)
    sims = features @ features.T
    chosen = [int(np.argmax(rel))]
    max_sim = sims[chosen[0]].copy()
    free = np.ones(m, dtype=bool)
    free[chosen[0]] = False
    while len(chosen) < n:
        mmr = mmr_lambda * rel - (1.0 - mmr_lambda) * max_sim
        ok = free & (1.0 - max_sim >= min_distance)
        pool = ok if ok.any() else free
        pick = int(np.flatnonzero(pool)[np.argmax(mmr[pool])])
        chosen.append(pick)
        free[pick] = False
        max_sim = np.maximum(max_sim, sims[pick])
    c = np.asarray(chosen)
    if n < 2:
        return c, float("nan")
    sub = sims[np.ix_(c, c)]
    return c, float(1.0 - sub[~np.eye(n, dtype=bool)].max())


def min_pairwise_distance(features: np.ndarray) -> float:
    """The smallest cosine distance between two of the (n, d) unit feature rows (NaN for fewer than two)."""
    n = len(features)
    if n < 2:
        return float("nan")
    sims = features @ features.T
    return float(1.0 - sims[~np.eye(n, dtype=bool)].max())
