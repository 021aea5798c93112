"""A loaded model bundle: every component the Personaliser needs, checked for consistency.

``load_bundle`` refuses a bundle with a clear message (``BundleRefused``) when a file is missing or differs
from the checksum its manifest recorded, a schema is not the one this code reads, or the components do not fit
together. The API loads bundles
only through here, so a bad bundle can never replace a good one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from engine.artifacts.registry import BUNDLE_SCHEMA_VERSION, CHECKSUMS, BundleRefused, bundle_checksums
from features.attributes import AttributeEncoder
from features.weighting import WeightingConfig
from models.cascade import CascadeDiscriminator, CascadeGenerator, load_discriminator, load_generator
from models.classifier import AttributeClassifier
from models.embeddings import EmbeddingModel
from models.gan import Discriminator, Generator
from models.io import config_from_dict, read_json
from models.retriever import FaissRetriever
from models.sr import SRComponent
from models.visual import VisualComponent, factors_digest

logger = logging.getLogger(__name__)

COMPONENTS = ("catalogue", "embeddings", "classifier", "generator", "index")
# bundles trained before they existed lack them; a retrain of the embeddings drops the visual encoder.
# The ranker's files are read by serving (``engine.serving.ranker``), which refuses the bundle if they fail.
OPTIONAL_COMPONENTS = ("visual", "ranker", "sr")


@dataclass(kw_only=True)
class Bundle:
    version: str
    path: Path
    manifest: dict
    catalogue: pd.DataFrame  # item_id, attributes…, price, image, has_image, popularity; row order = codes
    codes: np.ndarray  # (n_items, n_attributes) attribute codes of the catalogue items
    encoder: AttributeEncoder
    embeddings: EmbeddingModel
    weighting: WeightingConfig
    generator: Generator | CascadeGenerator  # called alike: (z, y) → images at the served size
    classifier: AttributeClassifier
    retriever: FaissRetriever
    image_root: Path | None
    embedding_rows: np.ndarray  # (n_items,) row of each catalogue item in the embedding model, or -1
    history: sp.csr_matrix  # (n_users, n_embedding_items) weighted training interactions, for session fold-in
    visual: VisualComponent | None = None  # image → item space (preference model, cold items)
    # the realism term of preference maximisation; with ``visual``
    discriminator: Discriminator | CascadeDiscriminator | None = None
    sr: SRComponent | None = None  # super-resolution (×2, ×4) and restoration nets: served sizes and /v1/enhance

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.encoder.attributes


def _check_manifest(path: Path, component: str, problems: list[str]) -> dict:
    mpath = path / "manifest.json"
    if not mpath.is_file():
        problems.append(f"{component}: manifest.json is missing")
        return {}
    try:
        manifest = read_json(mpath)
    except ValueError as exc:
        problems.append(f"{component}: manifest.json is not valid JSON ({exc})")
        return {}
    if manifest.get("schema_version") != BUNDLE_SCHEMA_VERSION:
        problems.append(
            f"{component}: schema_version {manifest.get('schema_version')!r}, this code reads {BUNDLE_SCHEMA_VERSION}"
        )
    return manifest


def _check_files(path: Path, manifest: dict) -> list[str]:
    """Every file against the checksum the bundle manifest recorded for it (none recorded: nothing to check)."""
    recorded = manifest.get(CHECKSUMS)
    if recorded is None:
        logger.info("bundle %s records no file checksums (written before they existed): not verified", path.name)
        return []
    if not isinstance(recorded, dict):
        return [f"manifest.json: {CHECKSUMS} must map file paths to SHA-256 digests"]
    found = bundle_checksums(path)
    problems = []
    missing = sorted(set(recorded) - set(found))
    if missing:
        problems.append(f"files missing: {_few(missing)}")
    changed = sorted(name for name in set(recorded) & set(found) if recorded[name] != found[name])
    if changed:
        problems.append(
            f"files differ from the checksums recorded when the bundle was written (corrupt or changed since): "
            f"{_few(changed)}"
        )
    extra = sorted(set(found) - set(recorded))
    if extra:
        problems.append(f"files the manifest does not list (added after the bundle was written): {_few(extra)}")
    return problems


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def load_bundle(path: Path, *, device: str = "cpu") -> Bundle:
    """Load and check a bundle folder; raise ``BundleRefused`` listing every problem found."""
    path = Path(path)
    problems: list[str] = []
    if not path.is_dir():
        raise BundleRefused(f"{path} is not a bundle folder")
    manifest = _check_manifest(path, "bundle", problems)
    integrity = _check_files(path, manifest)  # reported with every other problem found
    for component in COMPONENTS:
        if not (path / component).is_dir():
            problems.append(f"{component}/ is missing")
        else:
            _check_manifest(path / component, component, problems)
    if problems:
        raise BundleRefused(f"bundle {path.name} refused: " + "; ".join(integrity + problems))
    try:
        catalogue = pd.read_parquet(path / "catalogue" / "items.parquet")
        encoder = AttributeEncoder.from_dict(read_json(path / "catalogue" / "attributes.json"))
        cat_manifest = read_json(path / "catalogue" / "manifest.json")
        embeddings = EmbeddingModel.load(path / "embeddings")
        weighting = config_from_dict(WeightingConfig, read_json(path / "embeddings" / "weighting.json"))
        generator = load_generator(path / "generator", device=device)
        classifier = AttributeClassifier.load(path / "classifier", device=device)
        retriever = FaissRetriever.load(path / "index")
        history = sp.csr_matrix(sp.load_npz(path / "embeddings" / "history.npz"))
        visual = discriminator = None
        if (path / "ranker").is_dir():
            _check_manifest(path / "ranker", "ranker", problems)
        if (path / "visual").is_dir():
            _check_manifest(path / "visual", "visual", problems)
            visual = VisualComponent.load(path / "visual", device=device)
            discriminator = load_discriminator(path / "generator", device=device)
        sr = None
        if (path / "sr").is_dir():
            _check_manifest(path / "sr", "sr", problems)
            sr = SRComponent.load(path / "sr", device=device)
    except Exception as exc:
        failed = f"a component failed to load ({type(exc).__name__}: {exc})"
        raise BundleRefused(f"bundle {path.name} refused: " + "; ".join([*integrity, failed])) from exc

    codes = encoder.transform(catalogue)
    if (codes < 0).any():
        problems.append("catalogue has attribute values that the attribute encoder does not know")
    if tuple(generator.config.cardinalities) != encoder.cardinalities:
        problems.append(f"generator cardinalities {generator.config.cardinalities} != encoder {encoder.cardinalities}")
    if classifier.config.image_size != generator.config.image_size:
        problems.append(
            f"the generator makes {generator.config.image_size} px images; the classifier reads "
            f"{classifier.config.image_size} px"
        )
    if tuple(classifier.config.cardinalities) != encoder.cardinalities:
        problems.append(
            f"classifier cardinalities {classifier.config.cardinalities} != encoder {encoder.cardinalities}"
        )
    indexed = catalogue.loc[catalogue["has_image"], "item_id"].to_numpy(dtype=str)
    if not np.array_equal(retriever.item_ids, indexed):
        problems.append("the FAISS index does not hold exactly the catalogue's items with images, in order")
    if retriever.dim != classifier.config.feature_dim:
        problems.append(f"index dimension {retriever.dim} != image feature dimension {classifier.config.feature_dim}")
    if history.shape != (len(embeddings.user_ids), len(embeddings.item_ids)):
        problems.append(f"history matrix {history.shape} does not match the embeddings' users × items")
    embedding_rows = embeddings.item_indices(catalogue["item_id"].tolist())
    if (embedding_rows < 0).all():
        problems.append("no catalogue item has an embedding")
    if not (np.isfinite(embeddings.item_factors).all() and np.isfinite(embeddings.user_factors).all()):
        problems.append("embedding factors hold NaN or inf")
    if visual is not None:
        vcfg = visual.encoder.config
        if vcfg.feature_dim != classifier.config.feature_dim or vcfg.item_dim != embeddings.dim:
            problems.append(
                f"visual encoder reads {vcfg.feature_dim}-d features into {vcfg.item_dim}-d vectors; the classifier "
                f"gives {classifier.config.feature_dim}-d features and the embeddings have {embeddings.dim} factors"
            )
        if visual.factors_digest != factors_digest(embeddings.item_factors):
            problems.append("the visual encoder was trained against other item factors than this bundle's embeddings")
        if not np.array_equal(visual.item_ids, retriever.item_ids):
            problems.append("the visual encoder's item vectors do not cover the indexed catalogue items, in order")
        if not np.isfinite(visual.item_vectors).all():
            problems.append("the visual encoder's item vectors hold NaN or inf")
    if sr is not None and not all(torch.isfinite(p).all() for net in sr.nets.values() for p in net.parameters()):
        problems.append("the super-resolution nets hold NaN or inf weights")
    if not problems:
        with torch.no_grad():
            z = torch.zeros(1, generator.config.z_dim)
            y = torch.as_tensor(codes[:1].copy())
            img = generator(z, y)
            if not torch.isfinite(img).all():
                problems.append("the generator produces NaN or inf")
            elif not torch.isfinite(classifier.features(img)).all():
                problems.append("the classifier produces NaN or inf features")
    problems = integrity + problems
    if problems:
        raise BundleRefused(f"bundle {path.name} refused: " + "; ".join(problems))
    root = cat_manifest.get("image_root")
    return Bundle(
        version=path.name,
        path=path,
        manifest=manifest,
        catalogue=catalogue,
        codes=codes,
        encoder=encoder,
        embeddings=embeddings,
        weighting=weighting,
        generator=generator,
        classifier=classifier,
        retriever=retriever,
        image_root=Path(root) if root else None,
        embedding_rows=embedding_rows,
        history=history,
        visual=visual,
        discriminator=discriminator,
        sr=sr,
    )
