"""The experiment the API suites create: personalised against popular images, by user, over two weeks of May
2024, and the admin token their apps are built with."""

TOKEN = "s3cret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
EXPERIMENT = {
    "name": "pvp",
    "unit": "user",
    "start": "2024-05-01T00:00:00Z",
    "stop": "2024-05-15T00:00:00Z",
    "variants": [{"name": "control", "strategy": "popular"}, {"name": "treatment", "strategy": "personalised"}],
}


def running_window(days: int = 60) -> dict[str, str]:
    """start and stop of an experiment running now (from yesterday, for ``days``): for tests whose requests carry
    no ``at`` and so happen at the server's clock. Experiments last at most a year."""
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return {"start": start.strftime(iso), "stop": (start + timedelta(days=days)).strftime(iso)}
