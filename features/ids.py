"""The longest id Vitrine accepts anywhere: shopper, session, item, event, exposure and image ids.

One number for every layer that takes an id: the readers' validation of a shop's logs, the event store's
records and id columns, the HTTP API's schemas and path patterns, and the image ids that serving issues (which
are built to fit it). An id that one layer accepts or issues is therefore accepted by every other one.
"""

from __future__ import annotations

#: Characters; the width of the event store's id columns (``VARCHAR(128)``).
MAX_ID_LENGTH = 128
