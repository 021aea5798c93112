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
