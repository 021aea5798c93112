"""Image ids: signed, short whatever the bundle, refused (saying what to do) when altered or foreign; the key file."""

import os
import stat
import threading

import numpy as np
import pytest

from engine.serving.image_ids import ImageIdCodec, load_or_create_key, stable_seed
from engine.serving.types import UnknownImage, catalogue_image_id
from features.ids import MAX_ID_LENGTH

KEY = b"k" * 32
VERSION = "20260301T120000Z-a1b2c3"
CONDITIONS = np.array([[0, 0, 0], [1, 2, 3], [4, 0, 1]])
SEED = stable_seed("user", VERSION, 0)


def codec(version: str = VERSION, conditions: np.ndarray = CONDITIONS, key: bytes = KEY) -> ImageIdCodec:
    return ImageIdCodec(version, conditions, key)


def test_an_id_names_its_condition_seed_and_latent_key():
    c = codec()
    z = np.linspace(-2, 2, 64).astype(np.float32)
    seeded, optimised = c.encode(1, SEED), c.encode(2, SEED, c.latent_key(z))
    ref = c.decode(seeded)
    assert (ref.condition, ref.codes.tolist(), ref.seed, ref.latent) == (1, [1, 2, 3], SEED, None)
    ref = c.decode(optimised)
    assert (ref.condition, ref.codes.tolist(), ref.seed, ref.latent) == (2, [4, 0, 1], SEED, c.latent_key(z))
    assert codec().encode(1, SEED) == seeded  # the same image has the same id in every worker


def test_the_latent_key_is_a_digest_of_the_bundle_and_the_code_as_stored():
    c = codec()
    z = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    assert c.latent_key(z) == c.latent_key(z.astype(np.float16).astype(np.float32))  # what the store holds
    assert c.latent_key(z) != c.latent_key(z + 1)
    assert c.latent_key(z) != codec(version="20260301T120000Z-ffffff").latent_key(z)


def test_ids_fit_every_layer_whatever_the_version_attributes_and_conditions():
    # a long version, 40 attributes with codes in the hundreds and a million conditions: the id's fields have
    # fixed widths (a digest of the version, the condition's row, the latent code's key), so it stays short
    conditions = np.broadcast_to(np.arange(100, 140, dtype=np.int64), (1_000_000, 40))  # a view: no memory
    c = codec(version="v" * 500, conditions=conditions)
    longest = c.encode(len(conditions) - 1, (1 << 64) - 1, c.latent_key(np.full(4096, 3.0, np.float32)))
    assert len(longest) <= 85 <= MAX_ID_LENGTH
    assert c.decode(longest).codes.tolist() == conditions[-1].tolist()
    assert len(codec().encode(0, SEED)) < len(codec().encode(0, SEED, "A" * 16)) <= 85


def test_an_id_signed_with_another_key_is_refused():
    forged = codec(key=b"x" * 32).encode(1, SEED)
    with pytest.raises(UnknownImage, match=r"signature.*request a new image set"):
        codec().decode(forged)


@pytest.mark.parametrize("field", [0, 1, 2, 3, 4])
def test_changing_any_field_breaks_the_signature(field):
    c = codec()
    image_id = c.encode(1, SEED, c.latent_key(np.zeros(8, np.float32)))
    parts = image_id.split(".")
    # a value of the same shape, so only the signature can tell
    parts[field] = {0: "AAAAAAAA", 1: "2", 2: f"{SEED ^ 1:016x}", 3: "B" * 16, 4: "C" * 22}[field]
    with pytest.raises(UnknownImage, match="signature"):
        c.decode(".".join(parts))


def test_removing_the_latent_key_breaks_the_signature():
    c = codec()
    bundle, condition, seed, _, tag = c.encode(1, SEED, c.latent_key(np.zeros(8, np.float32))).split(".")
    with pytest.raises(UnknownImage, match="signature"):
        c.decode(f"{bundle}.{condition}.{seed}.{tag}")


def test_an_id_of_another_bundle_is_refused_as_no_longer_serving():
    old = codec(version="20250101T000000Z-000000").encode(1, SEED)
    with pytest.raises(UnknownImage, match="another bundle, which no longer serves"):
        codec().decode(old)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (3, "condition this bundle does not have"),
        (10**9 - 1, "condition this bundle does not have"),
        (10**20 - 1, "is not an image id this service issued"),  # more digits than a condition field holds
    ],
)
def test_a_signed_id_of_a_condition_the_bundle_lacks_is_unknown_not_an_overflow(row, message):
    c = codec()
    payload = f"{c.encode(0, SEED).split('.')[0]}.{row}.{SEED:016x}"  # signed as the server would, but out of range
    with pytest.raises(UnknownImage, match=message):
        c.decode(f"{payload}.{c._tag(payload)}")
    with pytest.raises(ValueError, match="no image id"):
        c.encode(row, SEED)


@pytest.mark.parametrize(
    "image_id",
    [
        "",
        "not-an-id",
        "20000101T000000Z-abcdef_0.0.0_0000000000000001",  # the old, unsigned form
        f"{VERSION}_1.2.3_{SEED:016x}_" + "A" * 150,  # the old form with a latent code, too long
        "A" * 8 + ".1." + "0" * 16 + "." + "A" * 22 + "x" * 200,
        "A" * 8 + ".-1." + "0" * 16 + "." + "A" * 22,
        "A" * 8 + ".1." + "0" * 16 + ".\u00e9" + "A" * 21,
    ],
)
def test_malformed_ids_are_unknown_images_that_say_what_to_do(image_id):
    with pytest.raises(UnknownImage, match="not an image id this service issued; request a new image set"):
        codec().decode(image_id)


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        codec(key=b"short")


def test_the_key_file_is_created_once_private_and_read_back(tmp_path):
    root = tmp_path / "artifacts"  # not there yet: created
    key = load_or_create_key(root)
    assert len(key) == 32
    path = root / ".image-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(root) == key  # a restart, or another worker, reads the same key
    assert [p.name for p in root.iterdir()] == [".image-key"]  # no temporary file left behind


def test_workers_starting_together_agree_on_one_key(tmp_path):
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        keys.append(load_or_create_key(tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1


def test_an_unusable_key_file_says_what_to_do(tmp_path):
    (tmp_path / ".image-key").write_text("not hex\n")
    with pytest.raises(ValueError, match=r"delete it.*VITRINE_IMAGE_KEY"):
        load_or_create_key(tmp_path)
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "read-only"
        ro.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="VITRINE_IMAGE_KEY"):
            load_or_create_key(ro)


def test_catalogue_photo_ids_fit_too_whatever_the_item_id():
    assert catalogue_image_id("I0042") == "catalogue.I0042"
    longest = [catalogue_image_id("x" * MAX_ID_LENGTH), catalogue_image_id("x" * (MAX_ID_LENGTH - 1) + "y")]
    assert all(len(i) <= MAX_ID_LENGTH and i.startswith("catalogue.~") for i in longest)
    assert longest[0] != longest[1]
    assert catalogue_image_id("x" * (MAX_ID_LENGTH - 10)) == "catalogue." + "x" * (MAX_ID_LENGTH - 10)
