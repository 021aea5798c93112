"""The API keeps its OpenAPI contract: schemathesis, with every check it has (``--checks all``), drives the app as
production runs it (credentials required, the server's own clock) and finds no failure.

Every check: no 5xx; only documented status codes, content types and headers; bodies that match their schemas;
schema-valid requests accepted (2xx, or 401/403/404/409/429 where they apply) and schema-violating ones
refused; and the rest. A few rules cannot be written in JSON Schema, so the OpenAPI document states them in
words, and :func:`within_the_written_rules` makes schema-valid requests follow them as a client would:

- event times lie in the accepted window around the server's clock (``VITRINE_EVENT_RETENTION_DAYS``);
- an experiment stops after it starts (by at most ``MAX_DAYS``), at times that have a UTC date-time, with
  distinct variant names, its control one of them, and (updates) the path's name.

Where what is valid depends on the serving bundle or on an image's content, neither of which a schema can know,
a 422 for schema-valid input is expected (:data:`BUNDLE_DEPENDENT`): the attribute values of ``/v1/generate``
(the bundle's catalogue), the sizes of ``/v1/images/{image_id}.png`` (whether the bundle has super-resolution)
and the photos of ``/v1/tag`` and ``/v1/enhance`` (decodable, large enough). Every other check applies to them.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from api.app import create_app
from api.settings import Settings
from engine.experiments.definition import MAX_DAYS

ADMIN_TOKEN = "contract-admin-token-0123456789"
SERVICE_KEY = "contract-service-key-0123456789"
EXAMPLES = 8  # per operation and phase: the run stays within about two minutes on a busy 2-core machine
#: Operations whose valid inputs depend on the bundle or on image content (module docstring): 422 is expected.
BUNDLE_DEPENDENT = ["/v1/generate", "/v1/images/{image_id}.png", "/v1/tag", "/v1/enhance"]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' own default


def production_settings(root, tmp_path) -> Settings:
    """Credentials required (a service key where the settings know them), no client clock; rate limits high
    enough that the run's own pace never meets them (the 429 is documented all the same)."""
    fields = Settings.model_fields
    extra: dict[str, Any] = {"service_keys": SERVICE_KEY} if "service_keys" in fields else {}
    if "open_access" in fields:  # the tests' environment opens the API; production does not
        extra["open_access"] = False
    return Settings(
        artifacts=root,
        admin_token=ADMIN_TOKEN,
        database_url=f"sqlite:///{tmp_path}/events.db",
        rate_limit_per_second=10_000,
        rate_limit_burst=10_000,
        **extra,
    )


def _utc(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00").replace("z", "+00:00"))
        return moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def _experiment(body: dict[str, Any], *, update: bool) -> None:
    start, stop = _utc(body.get("start")), _utc(body.get("stop"))
    if start is None or stop is None or not start < stop <= start + timedelta(days=MAX_DAYS):
        body["start"], body["stop"] = "2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z"
    variants = body.get("variants")
    if isinstance(variants, list):
        for i, v in enumerate(variants):
            if isinstance(v, dict):
                v["name"] = f"v{i}"
        if body.get("control") is not None:
            body["control"] = "v0"
    if update:  # the path names the experiment (a stateful run's links fill it in after this hook)
        body.pop("name", None)


def within_the_written_rules(context: Any, case: Any) -> Any:
    """Schema-valid requests made to follow the rules the OpenAPI document states in words (module docstring)."""
    if case.meta is None or not case.meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return case
    now = datetime.now(UTC).isoformat()
    if case.path in ("/v1/events", "/v1/sessions/{session_id}/events"):
        for event in case.body.get("events") or []:
            for field in ("ts", "timestamp"):
                if isinstance(event, dict) and event.get(field) is not None:
                    event[field] = now
    elif case.path in ("/v1/admin/experiments", "/v1/admin/experiments/{name}"):
        _experiment(case.body, update=case.path.endswith("{name}"))
    return case


@pytest.mark.filterwarnings("ignore")
def test_every_operation_keeps_the_contract(trained_artifacts, tmp_path):
    root = tmp_path / "artifacts"  # a copy: the run erases shoppers (DELETE /v1/users/{id}) into its register
    shutil.copytree(trained_artifacts[0], root)
    app = create_app(production_settings(root, tmp_path))
    config = SchemathesisConfig.from_dict(
        {
            "seed": 7,
            "checks": {"enabled": True},
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
            "operations": [
                {
                    "include-path": BUNDLE_DEPENDENT,
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
                }
            ],
        }
    )
    with TestClient(app):  # runs the lifespan: the bundle and the event store
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
        schema.hook("map_case")(within_the_written_rules)
        started = time.monotonic()
        failures: dict[tuple[str, str, str], str] = {}
        errors: list[str] = []
        operations = set()
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                operations.add(event.recorder.label)
                for checks in event.recorder.checks.values():
                    for check in checks:
                        if check.status == Status.FAILURE and check.failure_info is not None:
                            failure = check.failure_info.failure
                            key = (event.recorder.label, check.name, failure.title)
                            failures.setdefault(key, f"{failure.message}\n    {check.failure_info.code_sample}")
            elif isinstance(event, events.NonFatalError | events.FatalError):
                errors.append(f"{getattr(event, 'label', '')}: {event.info.format()[:1500]}")
        took = time.monotonic() - started
    report = "\n".join(f"- {op} [{name}] {title}: {detail}" for (op, name, title), detail in sorted(failures.items()))
    assert not errors, "\n".join(errors)
    assert not failures, f"{len(failures)} contract failures in {took:.0f} s:\n{report}"
    assert len(operations) >= 10, operations  # the run reached the API's operations, not just the schema
