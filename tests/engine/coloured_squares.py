"""A known-answer image set for the generator tests: coloured squares whose colour is their label."""

import numpy as np

PALETTE = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 220]], dtype=np.uint8)


def colour_dataset(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each image is a square of its label's colour on a light background, at a random place."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = np.full((n, size, size, 3), 235, dtype=np.uint8)
    for k, lab in enumerate(labels):
        y0, x0 = rng.integers(0, size // 2, 2)
        images[k, y0 : y0 + size // 2, x0 : x0 + size // 2] = PALETTE[lab]
    return images, labels[:, None]


def requested_colour_share(generator, *, per_colour: int, z_dim: int) -> float:
    """Share of ``per_colour`` images of each colour, drawn by ``generator(z, y)`` (in [-1, 1]), whose most saturated
    pixels have the dominant channel of the colour asked for."""
    import torch

    y = torch.arange(3).repeat_interleave(per_colour)[:, None]
    with torch.no_grad():
        x = generator(torch.randn(len(y), z_dim, generator=torch.Generator().manual_seed(1)), y)
    rgb = ((x + 1) * 127.5).permute(0, 2, 3, 1).reshape(len(x), -1, 3).numpy()
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    dominant = np.array([rgb[k][sat[k] > np.quantile(sat[k], 0.8)].mean(axis=0).argmax() for k in range(len(x))])
    return float((dominant == PALETTE.argmax(axis=1)[y.ravel().numpy()]).mean())
