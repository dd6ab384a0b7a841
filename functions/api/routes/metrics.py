"""``GET /metrics``: the control plane's metrics in the Prometheus text exposition format.

Served where the control's metrics port keeps them for a scraper (``lifeboat up``: the
Prometheus adapter); in AWS metrics go to CloudWatch and this route answers 404. The
caller is a user or API token with the ``read`` permission, or a scraper sending the
scrape token (``LIFEBOAT_METRICS_TOKEN``) as its bearer value, compared in constant time
and good for this route only.
"""

import hmac

from aws_lambda_powertools.event_handler import Response

from functions.api.core import ROUTE_CREDENTIALS, ctl, route
from shared.domain.identity import Permission, Role
from shared.errors import NotFoundError
from shared.ports.metrics import ScrapeTarget
from shared.services.auth import Principal

SCRAPER = Principal(subject="metrics-scraper", roles=(Role.VIEWER,))


def _scrape_token(bearer: str) -> Principal | None:
    target = ctl().metrics
    expected = target.scrape_token if isinstance(target, ScrapeTarget) else None
    if expected and hmac.compare_digest(bearer.encode(), expected.encode()):
        return SCRAPER
    return None


ROUTE_CREDENTIALS["/metrics"] = _scrape_token


@route("GET", "/metrics", Permission.READ, responses={
    200: {"description": "Prometheus text exposition format (version 0.0.4)", "content": {"text/plain": {}}}})  # fmt: skip
def get_metrics():  # -> Response (powertools reads annotations as schemas)
    """Every catalogue metric (docs/monitoring.md), for a Prometheus scraper."""
    target = ctl().metrics
    if not isinstance(target, ScrapeTarget):
        raise NotFoundError("this control plane sends its metrics to CloudWatch; nothing to scrape here")
    content_type, body = target.exposition()
    return Response(status_code=200, content_type=content_type, body=body.decode())
