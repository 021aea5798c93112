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
