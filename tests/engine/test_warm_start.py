"""Training accumulates: a bundle's GAN continues from its parent's when the parent fits, and says why not."""

import dataclasses

import pytest
import torch

from engine.artifacts.registry import ArtifactRegistry
from engine.training.components import Manifests
from engine.training.config import load_train_config
from engine.training.gan import WARM_START_RAMP, GANTraining
from engine.training.generator import base_images, generator_into
from engine.training.pipeline import visual_catalogue
from engine.training.scaffold import TrainingImages
from engine.training.warm_start import ContinueFrom, load_weights, mismatch, parent_weights
from features.attributes import AttributeEncoder
from features.readers import read_store
from models.cascade import CascadeGenerator, load_generator
from models.gan import GANConfig
from models.io import read_config, read_json


@pytest.fixture(scope="module")
def catalogue(demo_store):
    config = load_train_config("tiny", overrides={"seed": 1})  # as the trained_artifacts bundle was trained
    vis = visual_catalogue(read_store(demo_store), config, show_progress=False)
    return config, vis


def parent(trained_artifacts):
    root, version = trained_artifacts
    gen_dir = root / version / "generator"
    return root, version, read_config(GANConfig, gen_dir)


def test_the_tiny_bundle_is_a_cascade_that_records_its_steps(trained_artifacts):
    root, version, config = parent(trained_artifacts)
    manifest = read_json(root / version / "generator" / "manifest.json")
    assert isinstance(load_generator(root / version / "generator"), CascadeGenerator)
    assert manifest["cascade"]["base_size"] == config.image_size == 32 and manifest["cascade"]["scale"] == 2
    assert manifest["metrics"]["total_steps"] == manifest["metrics"]["steps"] > 0


def test_a_retrain_continues_the_serving_bundles_gan(trained_artifacts, catalogue, tmp_path):
    root, version, _ = parent(trained_artifacts)
    config, vis = catalogue
    codes = vis.codes[vis.items["has_image"].to_numpy()]
    parent_steps = read_json(root / version / "generator" / "manifest.json")["metrics"]["total_steps"]
    trained = generator_into(
        tmp_path / "generator",
        vis.images,
        codes,
        vis.encoder,
        config,
        Manifests(1, "test"),
        registry=ArtifactRegistry(root),
        continue_from=ContinueFrom(),  # the default: the serving bundle
        show_progress=False,
    )
    manifest = read_json(tmp_path / "generator" / "manifest.json")
    assert manifest["continued_from"] == {"bundle": version, "steps": parent_steps}
    assert trained.record["total_steps"] == parent_steps + trained.record["steps"]
    assert isinstance(load_generator(tmp_path / "generator"), CascadeGenerator)
    # and the next one continues from this one's total
    assert load_weights(tmp_path).steps == parent_steps + trained.record["steps"]
    # the upscaler continued from the parent's: it started from the parent's weights, not bicubic
    assert manifest["cascade"]["upscaler"]["continued"] is True


def test_after_a_warm_start_the_learning_rates_ramp_up(trained_artifacts, catalogue):
    root, version, gcfg = parent(trained_artifacts)
    config, vis = catalogue
    codes = vis.codes[vis.items["has_image"].to_numpy()]
    data = TrainingImages.checked(base_images(vis.images[:16], 2), codes[:16], gcfg, model="GAN")
    training = GANTraining(data, gcfg, config.gan_training, seed=1)
    training.warm_start(load_weights(root / version))
    rng = torch.Generator().manual_seed(0)
    training.step(0, rng)
    assert training.opt_g.param_groups[0]["lr"] == pytest.approx(config.gan_training.lr_g / WARM_START_RAMP)
    training.step(WARM_START_RAMP + 5, rng)
    assert training.opt_d.param_groups[0]["lr"] == config.gan_training.lr_d


def test_warm_start_loads_the_parents_weights_and_continues_its_ema_warm_up(trained_artifacts, catalogue):
    root, version, gcfg = parent(trained_artifacts)
    config, vis = catalogue
    weights = load_weights(root / version)
    codes = vis.codes[vis.items["has_image"].to_numpy()]
    data = TrainingImages.checked(base_images(vis.images[:16], 2), codes[:16], gcfg, model="GAN")
    training = GANTraining(data, gcfg, config.gan_training, seed=99)  # another seed: other initial weights
    training.warm_start(weights)
    for name, state in (("g_ema", weights.generator_ema), ("d", weights.discriminator), ("g", weights.generator)):
        mine = getattr(training, name).state_dict()
        assert all(torch.equal(mine[k], v) for k, v in state.items()), name
    assert training.steps_before == weights.steps > 0


def test_a_named_parent_that_does_not_fit_is_refused_saying_what_differs(trained_artifacts, catalogue):
    root, version, gcfg = parent(trained_artifacts)
    _, vis = catalogue
    wider = dataclasses.replace(gcfg, g_width=2 * gcfg.g_width)
    registry = ArtifactRegistry(root)
    with pytest.raises(ValueError, match=r"g_width.*--fresh"):
        parent_weights(registry, ContinueFrom(version=version), wider, vis.encoder, 2, private=False)
    # by default such a change trains afresh instead
    assert parent_weights(registry, ContinueFrom(), wider, vis.encoder, 2, private=False) is None
    assert parent_weights(registry, ContinueFrom(fresh=True), gcfg, vis.encoder, 2, private=False) is None
    assert parent_weights(registry, ContinueFrom(), gcfg, vis.encoder, 2, private=True) is None
    assert parent_weights(registry, ContinueFrom(), gcfg, vis.encoder, 2, private=False) is not None


def test_other_attribute_values_or_another_cascade_do_not_fit(trained_artifacts, catalogue):
    root, version, gcfg = parent(trained_artifacts)
    _, vis = catalogue
    values = {a: list(v) for a, v in vis.encoder.values_.items()}
    values["colour"] = list(reversed(values["colour"]))  # same sizes, other meanings
    shuffled = AttributeEncoder.from_dict({**vis.encoder.to_dict(), "values": values})
    assert "attribute values changed" in mismatch(root / version, gcfg, shuffled, 2)
    assert "cascade changed" in mismatch(root / version, gcfg, vis.encoder, 4)
    assert mismatch(root / version, gcfg, vis.encoder, 2) is None


def test_fresh_and_a_named_parent_contradict():
    with pytest.raises(ValueError, match="contradict"):
        ContinueFrom(version="v1", fresh=True)
