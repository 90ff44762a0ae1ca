"""A STAC API Item Search, paged lazily with pystac-client, retried with backoff, errors named.

The search is POSTed (GET when the server does not conform to POST search is
pystac-client's choice) a page of ``StacSearch.page_size`` items at a time;
items are yielded as each page arrives, so the first scene is planned before
the last page is asked for.  A request that times out, cannot connect or is
answered 500/502/503/504 is retried ``max_retries`` times with exponential
backoff (urllib3's ``Retry``, 0.5 s, 1 s, 2 s, ...); then the search fails
with one line naming the server and what it answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.errors import SourceError

RETRY_STATUSES = (500, 502, 503, 504)
BACKOFF_S = 0.5


@dataclass(frozen=True, slots=True)
class StacSearch:
    """An Item Search on a STAC API (``--stac-search``).

    Attributes:
        url: the API's landing page.
        collections: ``--collections``.
        datetime: ``--datetime`` (RFC 3339 instant or ``start/end``).
        bbox: ``--bbox`` in OGC:CRS84 (lon/lat).
        intersects: a GeoJSON geometry in OGC:CRS84 (from ``--aoi``).
        cql2_filter: ``--filter``: CQL2 text, or CQL2 JSON when it starts with ``{``.
        timeout_s: per request.
        max_retries: of a request that times out or answers 5xx, with backoff.
        page_size: items per page asked of the server.
    """

    url: str
    collections: tuple[str, ...] = ()
    datetime: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    intersects: dict[str, Any] | None = None
    cql2_filter: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 4
    page_size: int = 100


def self_href(item: dict[str, Any]) -> str | None:
    """The href of an item's ``self`` link, or None."""
    for link in item.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "self" and isinstance(link.get("href"), str):
            return str(link["href"])
    return None


def _client(search: StacSearch) -> Any:
    """A pystac-client ``Client`` on ``search.url`` with retries and a per-request timeout."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(
        total=search.max_retries,
        backoff_factor=BACKOFF_S,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # POST searches are read-only: retry them too
        raise_on_status=True,
    )
    stac_io = StacApiIO(timeout=search.timeout_s, max_retries=retry)
    return Client.open(search.url, stac_io=stac_io, timeout=search.timeout_s)


def _parameters(search: StacSearch) -> dict[str, Any]:
    """The search's parameters as pystac-client takes them."""
    params: dict[str, Any] = {"limit": search.page_size}
    if search.collections:
        params["collections"] = list(search.collections)
    if search.datetime:
        params["datetime"] = search.datetime
    if search.bbox is not None:
        params["bbox"] = list(search.bbox)
    if search.intersects is not None:
        params["intersects"] = search.intersects
    if search.cql2_filter:
        params["filter"], params["filter_lang"] = cql2_json(search.cql2_filter), "cql2-json"
    return params


def cql2_json(text: str) -> dict[str, Any]:
    """``--filter`` (CQL2 text, or CQL2 JSON when it starts with ``{``) as CQL2 JSON, checked here.

    POST searches take CQL2 JSON only (stac-fastapi answers 400 to cql2-text in a body), so
    text is parsed on the client (the ``cql2`` package), and a malformed filter is one line
    before any request.

    Raises:
        SourceError: it is neither.

    Example:
        >>> cql2_json("platform = 'plane'")
        {'op': '=', 'args': [{'property': 'platform'}, 'plane']}
    """
    import json

    import cql2

    stripped = text.strip()
    try:
        if stripped.startswith("{"):
            return dict(cql2.Expr(json.loads(stripped)).to_json())
        return dict(cql2.parse_text(stripped).to_json())
    except Exception as exc:  # json, cql2.ParseError, cql2.ValidationError, serde errors (plain Exception)
        detail = " ".join(str(exc).split())[:200]
        raise SourceError(f"--filter {text!r} is not CQL2 text or JSON: {detail}") from None


def _explain(url: str, exc: BaseException) -> str:
    """One line for a failed search: the server, and what it answered or why nothing came."""
    text = " ".join(str(exc).split())[:300]
    lower = text.lower()
    if "too many" in lower and "error responses" in lower:
        return f"STAC API {url} kept failing (answered with a server error after retries): {text}"
    if any(word in lower for word in ("timed out", "timeout", "refused", "failed to establish")):
        return f"STAC API {url} did not answer (timed out or refused, after retries): {text}"
    return f"STAC API {url}: search failed: {text}"


def search_items(search: StacSearch) -> Iterator[tuple[dict[str, Any], str | None]]:
    """``(item dict, item href)`` for every item the search matches, page by page.

    Raises:
        SourceError: the server cannot be reached, keeps failing, or refuses the search.
    """
    import requests
    from pystac_client.exceptions import APIError

    params = _parameters(search)  # a malformed --filter fails before any request
    try:
        results = _client(search).search(**params)
        for item in results.items_as_dicts():
            yield item, self_href(item)
    except SourceError:
        raise
    except (APIError, requests.exceptions.RequestException, OSError, ValueError) as exc:
        raise SourceError(_explain(search.url, exc)) from None
