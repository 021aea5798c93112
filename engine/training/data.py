"""What a training run reads: a shop's data folder, plus, when asked, the Vitrine API's own events.

``read_training_data(path, events=(url, ...))`` reads the base logs and catalogue at ``path`` and adds the
shopper events that the API stored in each event store ``url`` (SQLite or PostgreSQL), converted and
validated by :func:`features.readers.service_events`. Without ``events`` it is exactly ``read_store(path)``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from engine.artifacts.erasures import ErasureRegister
from engine.experiments.database import without_credentials
from engine.experiments.eventstore import read_event_log
from features.pseudonyms import load_or_create_keyring, pseudonymise_column
from features.readers import merge_events, read_store, service_events
from features.schema import StoreData

logger = logging.getLogger(__name__)


def read_training_data(
    data_path: Path, events: Sequence[str] = (), *, artifacts: Path | None = None
) -> tuple[StoreData, dict[str, Any] | None]:
    """The store at ``data_path`` with the service events of every event store URL in ``events`` added.

    Returns the merged data and what the manifest records about the service events (their sources, with no
    credentials, and counts), or None when ``events`` is empty. The same ``client_event_id`` in two stores
    counts once.

    With ``artifacts`` (the registry root that serving reads), shopper ids are pseudonymised with its keyring as
    they are read, and the events of shoppers in its erasure register from before their erasure are left out:
    the bundle then holds neither a shop's shopper id nor an erased shopper.
    """
    pseudonyms = load_or_create_keyring(artifacts) if artifacts is not None else None
    store = read_store(data_path, pseudonyms=pseudonyms)
    if not events:
        return _without_erased(store, artifacts), None
    sources = [without_credentials(url) for url in events]
    frames = []
    for url, shown in zip(events, sources, strict=True):
        frame = read_event_log(url)
        logger.info("event store %s: %d events", shown, len(frame))
        frames.append(frame)
    service = service_events(
        pd.concat(frames, ignore_index=True),
        source=f"{', '.join(sources)} (events table; lines are its row ids)",
        known_items=pd.Index(store.catalogue["item_id"]),
    )
    (logger.warning if service.report.rows_rejected else logger.info)(service.summary())
    if pseudonyms is not None:  # the API stores pseudonyms; events written by other means are made so here
        service.events["user_id"] = pseudonymise_column(service.events["user_id"], pseudonyms)
    merged = _without_erased(merge_events(store, service), artifacts)
    users = set(service.events["user_id"]) - set(store.events["user_id"])
    record = {"sources": sources, **service.counts(), "new_users": len(users)}
    return merged, record


def _without_erased(store: StoreData, artifacts: Path | None) -> StoreData:
    if artifacts is None:
        return store
    keep = ErasureRegister(artifacts).keep_events(store.events)
    if keep.all():
        return store
    logger.info("left out %d events of erased shoppers (the erasure register)", int((~keep).sum()))
    return dataclasses.replace(store, events=store.events[keep].reset_index(drop=True))
