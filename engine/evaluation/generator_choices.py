"""The names the generator commands accept, apart from the code that runs them, so the CLI can build its
options without importing torch (``vitrine --help`` stays fast)."""

DATASETS = ("fashion_mnist", "myntra", "hm", "demo")
MODELS = ("gan", "vae")
