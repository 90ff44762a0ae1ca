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
from typing import Any

from pipeline.errors import SourceError
from pipeline.stac_source import StacSearch

RETRY_STATUSES = (500, 502, 503, 504)
BACKOFF_S = 0.5


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
        text = search.cql2_filter.strip()
        if text.startswith("{"):
            import json

            try:
                params["filter"], params["filter_lang"] = json.loads(text), "cql2-json"
            except json.JSONDecodeError as exc:
                raise SourceError(f"--filter is not CQL2 JSON ({exc}); pass CQL2 text or JSON") from None
        else:
            params["filter"], params["filter_lang"] = text, "cql2-text"
    return params


def _explain(url: str, exc: BaseException) -> str:
    """One line for a failed search: the server, and what it answered or why nothing came."""
    import requests

    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, requests.exceptions.RetryError) or "too many" in text.lower():
        return f"STAC API {url} kept failing (answered with a server error after retries): {text}"
    if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
        return f"STAC API {url} did not answer (timed out or refused, after retries): {text}"
    return f"STAC API {url}: search failed: {text}"


def search_items(search: StacSearch) -> Iterator[tuple[dict[str, Any], str | None]]:
    """``(item dict, item href)`` for every item the search matches, page by page.

    Raises:
        SourceError: the server cannot be reached, keeps failing, or refuses the search.
    """
    import requests
    from pystac_client.exceptions import APIError

    from pipeline.stac_source import _self_href

    try:
        client = _client(search)
        results = client.search(**_parameters(search))
        for item in results.items_as_dicts():
            yield item, _self_href(item)
    except SourceError:
        raise
    except (APIError, requests.exceptions.RequestException, OSError, ValueError) as exc:
        raise SourceError(_explain(search.url, exc)) from None
