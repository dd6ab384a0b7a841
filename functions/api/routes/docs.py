"""The API's own description: ``/openapi.json`` and the offline ``/docs`` page (both public).

Imported last by ``functions/api/app.py``, after every capability's routes.
"""

import json

from aws_lambda_powertools.event_handler import Response

from functions.api.core import PUBLIC, ROUTES, app, openapi_json


@app.get("/openapi.json", include_in_schema=False)
def _openapi():  # -> Response (powertools reads annotations as schemas)
    return Response(status_code=200, content_type="application/json", body=openapi_json())


ROUTES[("GET", "/openapi.json")] = PUBLIC


@app.get("/docs", include_in_schema=False)
def _docs():  # -> Response (powertools reads annotations as schemas)
    """The API reference as one self-contained page (no external assets: works offline)."""
    import html

    spec = json.loads(openapi_json())
    rows = []
    for path, ops in sorted(spec["paths"].items()):
        for method, op in ops.items():
            perm = ROUTES.get((method.upper(), path.replace("{", "<").replace("}", ">")), "?")
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op.get('summary', ''))}</td><td>{html.escape(str(perm or 'public'))}</td></tr>"
            )
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Lifeboat API</title>"
        "<style>body{font:15px system-ui;margin:2em}td{padding:.2em .8em;border-bottom:1px solid #ddd}</style>"
        "<h1>Lifeboat API</h1><p>Machine-readable: <a href=/openapi.json>/openapi.json</a> (OpenAPI 3.1).</p>"
        "<table><tr><th>method</th><th>path</th><th>summary</th><th>permission</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return Response(status_code=200, content_type="text/html; charset=utf-8", body=page)


ROUTES[("GET", "/docs")] = PUBLIC
