"""DiffAugment: whole-pixel translation and cutout, filled with 0, no colour change, seeded, differentiable."""

import pytest
import torch

from engine.training.augment import cutout, diff_augment, translate


def distinct_pixels(b: int = 16, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Images whose every pixel is a different nonzero colour, so a moved or blanked pixel can be traced."""
    x = torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.05
    return x * torch.where(torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed + 1)) < 0.5, -1, 1)


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = x[i + dy, j + dx], zero where that falls outside the image."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
        ..., max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


def test_translation_moves_each_image_by_whole_pixels_and_fills_with_zero():
    x = distinct_pixels(32)
    out = translate(x, 0.125, torch.Generator().manual_seed(0))  # up to int(16 * 0.125 + 0.5) = 2 pixels
    shifts = []
    for k in range(len(x)):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(out[k], shifted(x[k], dy, dx))]
        assert len(found) == 1, f"image {k} is not a whole-pixel shift of at most 2 pixels"
        shifts.append(found[0])
    # the fill is 0: exactly the rows and columns shifted in are zero, nothing else is
    for k, (dy, dx) in enumerate(shifts):
        assert (out[k] == 0).sum() == 3 * (256 - (16 - abs(dy)) * (16 - abs(dx)))
    assert len(set(shifts)) > 5  # each image draws its own shift


def test_translation_by_zero_is_the_identity():
    x = distinct_pixels(4)
    assert torch.equal(translate(x, 0.0, torch.Generator().manual_seed(0)), x)


def test_cutout_blanks_one_square_of_the_documented_size():
    x = distinct_pixels(64)
    out = cutout(x, 0.5, torch.Generator().manual_seed(0))  # side int(16 * 0.5 + 0.5) = 8
    inside = 0
    for k in range(len(x)):
        zero = (out[k] == 0).all(dim=0)
        assert ((out[k] == 0) == zero).all(), "cutout must blank all channels of a pixel together"
        assert torch.equal(out[k][:, ~zero], x[k][:, ~zero])  # the rest is untouched
        rows, cols = zero.any(dim=1).nonzero().ravel(), zero.any(dim=0).nonzero().ravel()
        assert len(rows) > 0
        # the blank is one axis-aligned rectangle: the square, clipped where it crosses the border
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert zero[r0:r1, c0:c1].all() and zero.sum() == (r1 - r0) * (c1 - c0)
        assert r1 - r0 <= 8 and c1 - c0 <= 8
        if r0 > 0 and r1 < 16 and c0 > 0 and c1 < 16:  # not touching the border: the full square
            assert (r1 - r0, c1 - c0) == (8, 8)
            inside += 1
    assert inside > 0


@pytest.mark.parametrize(("ratio", "side"), [(0.25, 4), (0.3, 5)])
def test_cutout_square_side_follows_the_ratio(ratio, side):
    x = torch.ones(64, 1, 16, 16)
    out = cutout(x, ratio, torch.Generator().manual_seed(1))
    blanked = (out[:, 0] == 0).sum(dim=(1, 2))
    assert blanked.max() == side * side and (blanked <= side * side).all() and (blanked > 0).all()


def test_diff_augment_changes_no_colour():
    """Colour is a condition of the generator: every pixel that survives keeps its exact colour."""
    x = distinct_pixels(16)
    out = diff_augment(x, torch.Generator().manual_seed(0), translation=0.125, cutout_ratio=0.5)
    for k in range(len(x)):
        colours = {tuple(p) for p in x[k].flatten(1).T.tolist()}
        kept = out[k].flatten(1).T
        kept = kept[(kept != 0).any(dim=1)]
        assert len(kept) > 0
        assert {tuple(p) for p in kept.tolist()} <= colours


def test_diff_augment_is_deterministic_given_the_generator_seed():
    x = distinct_pixels(16)
    a = diff_augment(x, torch.Generator().manual_seed(7))
    b = diff_augment(x, torch.Generator().manual_seed(7))
    c = diff_augment(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_diff_augment_draws_only_from_its_own_generator():
    x = distinct_pixels(8)
    torch.manual_seed(0)
    a = diff_augment(x, torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    b = diff_augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_diff_augment_with_both_ratios_zero_is_the_identity():
    x = distinct_pixels(4)
    assert torch.equal(diff_augment(x, torch.Generator(), translation=0.0, cutout_ratio=0.0), x)


def test_gradients_flow_to_exactly_the_pixels_that_survive():
    x = distinct_pixels(8).requires_grad_(True)
    out = diff_augment(x, torch.Generator().manual_seed(0))
    weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(5))
    (out * weights).sum().backward()
    assert x.grad is not None
    # each input pixel lands on at most one output pixel, so its gradient is that pixel's weight, or 0
    survived = x.grad != 0
    assert survived.sum() == (out != 0).sum()
    assert torch.equal(torch.sort(x.grad[survived]).values, torch.sort(weights[out != 0]).values)
