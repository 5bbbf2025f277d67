"""HTTP request metrics: labelled by route template and status, never by the raw path."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

from sinas_gateway.metrics import UNMATCHED_ROUTE


def requests_seen(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("sinas_http_requests_total", labels) or 0.0


async def test_a_request_is_counted_by_route_and_status(client: httpx.AsyncClient) -> None:
    before = requests_seen("GET", "/health", "200")
    assert (await client.get("/health")).status_code == 200
    assert requests_seen("GET", "/health", "200") == before + 1


async def test_an_unknown_path_is_counted_under_one_label(client: httpx.AsyncClient) -> None:
    before = requests_seen("GET", UNMATCHED_ROUTE, "404")
    assert (await client.get("/no/such/path/4711")).status_code == 404
    assert requests_seen("GET", UNMATCHED_ROUTE, "404") == before + 1
    assert requests_seen("GET", "/no/such/path/4711", "404") == 0.0
