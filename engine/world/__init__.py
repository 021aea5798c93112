"""The world: a seeded synthetic shop (catalogue drawings, shoppers with hidden tastes, their browsing logs).

``write_demo_store`` writes the demo store that ``vitrine data demo`` produces and the rest of the system
trains on; ``load_tastes`` reads its hidden ground truth back for evaluation; :class:`Taste` is the taste
model that the log simulator and an A/B simulator share.
"""

from engine.world.art import CLASSES, COLOURS, PATTERNS, draw_item
from engine.world.behaviour import ShopperBehaviour, draw_appeal, simulate_events
from engine.world.demo_store import DemoStoreConfig, load_tastes, make_catalogue, write_demo_store
from engine.world.tastes import ATTRIBUTES, VOCABULARIES, Taste, TastePrior, draw_tastes, taste_popularity, utilities

__all__ = [
    "ATTRIBUTES",
    "CLASSES",
    "COLOURS",
    "PATTERNS",
    "VOCABULARIES",
    "DemoStoreConfig",
    "ShopperBehaviour",
    "Taste",
    "TastePrior",
    "draw_appeal",
    "draw_item",
    "draw_tastes",
    "load_tastes",
    "make_catalogue",
    "simulate_events",
    "taste_popularity",
    "utilities",
    "write_demo_store",
]
