"""One listing of the source per run: walked by the footprint pass, then consumed by the lifecycle.

The cross-scene merge must know every listed scene's footprint before the
first tile (``pipeline.mosaic_index.footprint_pass``), and the lifecycle then
claims, opens and records the same scenes in the same order.  Listing the
source twice would run a STAC API search twice, page an S3 bucket twice and
could see two different buckets (an object added in between), so the pass
walks the one listing through ``ListingTape.walk``, which keeps each entry,
and the lifecycle reads ``ListingTape.replay``: the kept entries, each
dropped as it is consumed, then whatever the walk did not reach.

Without the pass (``--no-cross-scene-merge``) nothing is kept: ``replay``
reads the listing itself, lazily, and the first tile does not wait for the
last key.  With it, the driver holds one small tuple per listed scene until
the lifecycle reaches it (next to the footprint it holds for that scene
anyway).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from pipeline.stac_source import ListingEntry


class ListingTape:
    """A listing of ``(uri, reason, item ref)`` entries that can be walked once ahead and replayed once.

    Args:
        entries: the run's listing (``pipeline.stac_source.listing_entries``).
    """

    def __init__(self, entries: Iterator[ListingEntry]) -> None:
        self._entries = entries
        self._kept: deque[ListingEntry] = deque()

    def walk(self) -> Iterator[tuple[str, str | None]]:
        """``(uri, reason)`` of each entry, read from the listing and kept for ``replay``."""
        for entry in self._entries:
            self._kept.append(entry)
            yield entry[0], entry[1]

    def replay(self) -> Iterator[ListingEntry]:
        """The entries ``walk`` kept, oldest first (each dropped once yielded), then the rest of the listing."""
        while self._kept:
            yield self._kept.popleft()
        yield from self._entries
