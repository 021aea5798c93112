"""API test setup: apps built in tests keep their event store in a temporary folder, not in data/."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _temporary_event_store(tmp_path_factory):
    previous = os.environ.get("VITRINE_DATABASE_URL")
    os.environ["VITRINE_DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('events')}/events.db"
    yield
    if previous is None:
        os.environ.pop("VITRINE_DATABASE_URL", None)
    else:
        os.environ["VITRINE_DATABASE_URL"] = previous
