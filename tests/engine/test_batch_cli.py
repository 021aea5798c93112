"""``vitrine batch image-sets`` and the ``--precompute`` flags: the mistakes they refuse, saying what to do."""

from __future__ import annotations

from engine.cli import build_parser, main


def test_precompute_without_promote_is_refused_before_training(caplog):
    assert main(["train", "--data", "no-such-store", "--precompute"]) == 2
    assert "add --promote" in caplog.text


def test_the_job_on_a_registry_without_a_serving_bundle_says_what_to_do(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("VITRINE_IMAGE_KEY", raising=False)
    monkeypatch.delenv("VITRINE_REDIS_URL", raising=False)
    assert main(["batch", "image-sets", "--artifacts", str(tmp_path), "--no-progress"]) == 2
    assert "give --version or promote one" in caplog.text


def test_a_short_image_key_is_refused_as_the_api_refuses_it(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("VITRINE_IMAGE_KEY", "short")
    assert main(["batch", "image-sets", "--artifacts", str(tmp_path)]) == 2
    assert "at least 16 characters" in caplog.text


def test_promote_and_train_take_the_flag():
    parser = build_parser()
    assert parser.parse_args(["promote", "v1", "--precompute"]).precompute
    assert not parser.parse_args(["promote", "v1"]).precompute
    assert parser.parse_args(["train", "--data", "d", "--promote", "--precompute"]).precompute
