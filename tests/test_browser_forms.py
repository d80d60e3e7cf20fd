"""The README's record edit page (examples/product_form.py) in headless Chromium with the real
Datastar client: a message next to a bad field, a save that clears it and lands on the record's
page, and an upload that shows the file's name and size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.responses import FileResponse
from starlette.routing import Route

from tests.support.servers import ROOT, run_server
from tests.test_browser import chromium, datastar_js  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("product_form", ROOT / "examples" / "product_form.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Pydantic resolves the example's annotations through it
    spec.loader.exec_module(module)
    return module


async def test_record_edit_page_validates_saves_redirects_and_uploads(
    tmp_path: Path,
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.async_api import expect

    monkeypatch.setenv("STARMODEL_DATASTAR_URL", "/static/datastar.js")
    example = load_example()
    app = example.build(database_url=f"sqlite+aiosqlite:///{tmp_path / 'products.db'}", secret_key="forms")

    async def script(request: Any) -> FileResponse:
        return FileResponse(datastar_js, media_type="text/javascript")

    app.router.routes.insert(0, Route("/static/datastar.js", script))
    photo = tmp_path / "lamp.jpg"
    photo.write_bytes(b"\xff\xd8" + b"x" * 2046)

    with run_server(app) as url:
        context = await chromium.new_context()
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url + "/")  # creates a product and opens its edit page
        await expect(page.locator("h1")).to_have_text("Edit New product")
        edit_url = page.url

        # a bad price: its message shows next to the field, nothing is saved, the page stays
        await page.fill("#name", "Desk lamp")
        await page.fill("#price", "-5")
        await page.click("#save")
        await expect(page.locator("#price-error")).to_have_text("Enter a price between 0 and 100,000.")
        await expect(page.locator("#name-error")).to_have_text("")
        assert page.url == edit_url

        # a too-short name and a price that is not a number: both messages, in sentences
        await page.fill("#name", "D")
        await page.fill("#price", "cheap")
        await page.click("#save")
        await expect(page.locator("#name-error")).to_have_text("Name must be at least 2 characters long.")
        await expect(page.locator("#price-error")).to_have_text("Enter a price between 0 and 100,000.")

        # the upload form: the file's name and size come back into the page
        await page.set_input_files("#photo-file", str(photo))
        await page.click("#send")
        await expect(page.locator("#photo")).to_have_text("lamp.jpg (2,048 bytes)")
        # a success clears the messages the page showed
        await expect(page.locator("#name-error")).to_have_text("")
        await expect(page.locator("#price-error")).to_have_text("")

        # a good save lands on the record's own page, with the saved values
        await page.fill("#name", "Desk lamp")
        await page.fill("#price", "24.5")
        await page.click("#save")
        await page.wait_for_url(edit_url.removesuffix("/edit"))
        await expect(page.locator("#title")).to_have_text("Desk lamp")
        await expect(page.locator("#price")).to_have_text("$24.50")
        assert errors == []
        await context.close()
