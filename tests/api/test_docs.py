"""/docs works offline: Swagger UI's assets come from the API itself, never from a CDN."""

from __future__ import annotations

import re

import httpx


def test_docs_page_loads_every_asset_from_the_api_itself(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r"""(?:src|href)=["']?([^"' >]+)""", page.text)
    scripts = re.findall(r"url: '([^']+)'", page.text)
    assert "/docs/assets/swagger-ui-bundle.js" in sources
    assert "/openapi.json" in scripts
    for url in sources + scripts:
        assert url.startswith("/"), f"{url} is not served by the API"
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.content, url


def test_swagger_ui_script_is_the_real_bundle(client: httpx.Client) -> None:
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert "SwaggerUIBundle" in script.text
