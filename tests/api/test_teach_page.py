"""The teacher page's shell: a Jinja2 template with autoescape, and assets from StaticFiles."""

from __future__ import annotations

import httpx


async def test_the_page_escapes_the_formative_id_from_the_address(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/teach/formatives/fm-\"><img src=x onerror='go()'>/passback")

    assert page.status_code == 200
    assert "<img" not in page.text
    escaped = "fm-&#34;&gt;&lt;img src=x onerror=&#39;go()&#39;&gt;"
    assert f'data-formative-id="{escaped}"' in page.text
    assert f"<title>Pass back grades to Canvas · {escaped}</title>" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "form-action 'none'" in page.headers["content-security-policy"]


async def test_the_page_loads_its_assets_from_the_static_mount(client: httpx.AsyncClient) -> None:
    page = await client.get("/teach/formatives/fm-42/passback")

    assert '<script src="/teach/static/passback.js" defer></script>' in page.text
    assert '<link rel="stylesheet" href="/teach/static/passback.css">' in page.text
    style = await client.get("/teach/static/passback.css")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")


async def test_assets_are_revalidated_never_sniffed_and_answer_304_when_unchanged(
    client: httpx.AsyncClient,
) -> None:
    script = await client.get("/teach/static/passback.js")

    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["cache-control"] == "no-cache"
    again = await client.get(
        "/teach/static/passback.js", headers={"If-None-Match": script.headers["etag"]}
    )
    assert again.status_code == 304


async def test_nothing_outside_the_static_folder_is_served(client: httpx.AsyncClient) -> None:
    for path in (
        "/teach/static/../templates/passback.html",
        "/teach/static/%2e%2e/templates/passback.html",
        "/teach/static/../../config.py",
        "/teach/static/nope.js",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
