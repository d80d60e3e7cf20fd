"""A record edit page: messages next to the fields, a file upload, a redirect to the record after saving.

pip install -e ".[demo]" && python examples/product_form.py     # then open http://127.0.0.1:8000
"""

from __future__ import annotations

import html
import os
from typing import Annotated

import uvicorn
from pydantic import BaseModel, Field, computed_field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Mount, Route

from starmodel_asgi import Entity, Message, Redirect, StarModel, UploadFile, event
from starmodel_asgi.pages import datastar_script


class ProductForm(BaseModel):
    """The edit form's fields, validated together; each message lands next to its input."""

    name: Annotated[str, Field(min_length=2, max_length=80)]
    price: Annotated[float, Field(gt=0, le=100_000), Message("Enter a price between 0 and 100,000.")]


class Product(Entity):
    model_config = {"scope": "record", "store": "sql"}
    name: str = ""
    price: float = 0
    photo: str = ""
    photo_size: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def display_price(self) -> str:
        return f"${self.price:,.2f}"

    @event
    def save(self, form: ProductForm) -> Redirect:
        """The whole form in one parameter; saved, then the page goes to the record."""
        self.name, self.price = form.name, form.price
        return Redirect(f"/products/{self.id}")

    @event(selector="#photo", mode="inner")
    async def upload(self, photo: UploadFile) -> str:
        size = len(await photo.read())  # a spooled file: kept on disk past 1 MB
        self.photo, self.photo_size = photo.filename or "photo", size
        return f"{html.escape(self.photo)} ({size:,} bytes)"


def head(title: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>{datastar_script()}
<style>body {{ font-family: system-ui, sans-serif; max-width: 36rem; margin: 2rem auto; }}
label {{ display: block; margin: .8rem 0 .2rem; }} .error {{ color: #b00020; font-size: .9rem; }}
input {{ font-size: 1rem; padding: .3rem; }}
button {{ font-size: 1rem; padding: .3rem .8rem; margin-top: .8rem; }}</style>
</head>"""


def build(database_url: str | None = None, secret_key: str | None = None) -> Starlette:
    sm = StarModel(
        entities=[Product],
        secret_key=secret_key or os.environ.get("STARMODEL_SECRET_KEY", "demo-only-secret"),
        database_url=database_url,
        max_body_size=5 * 1024 * 1024,  # room for photos
        datastar_error_status=200,  # the Datastar client shows only 200 answers: let it show messages
    )

    async def new(request: Request) -> RedirectResponse:
        product = await sm.create(Product, name="New product", price=1)
        return RedirectResponse(f"/products/{product.id}/edit", status_code=303)

    async def show(request: Request) -> HTMLResponse:
        product = await sm.current(Product, request, id=request.path_params["id"])
        return HTMLResponse(f"""{head(product.name)}<body>
  <h1 id="title">{html.escape(product.name)}</h1>
  <p>Price: <strong id="price">{product.display_price}</strong></p>
  <p><a href="/products/{product.id}/edit">Edit</a></p></body></html>""")

    async def edit(request: Request) -> HTMLResponse:
        product = await sm.current(Product, request, id=request.path_params["id"])
        save = Product.save(id=product.id).options(contentType="form")
        upload = Product.upload(id=product.id).options(contentType="form")
        return HTMLResponse(f"""{head("Edit " + product.name)}<body>
  {Product.holder(product, sync=None)}
  <h1>Edit {html.escape(product.name)}</h1>
  <form id="edit" data-on:submit="{save}">
    <label for="name">Name</label>
    <input id="name" name="name" value="{html.escape(product.name)}">
    <div id="name-error" class="error" data-text="$product._errors.name"></div>
    <label for="price">Price</label>
    <input id="price" name="price" value="{product.price}">
    <div id="price-error" class="error" data-text="$product._errors.price"></div>
    <button id="save">Save</button>
  </form>
  <form id="upload" enctype="multipart/form-data" data-on:submit="{upload}">
    <label for="photo-file">Photo</label>
    <input id="photo-file" type="file" name="photo">
    <button id="send">Upload</button>
    <div id="photo-error" class="error" data-text="$product._errors.photo"></div>
  </form>
  <p>Photo: <span id="photo">{html.escape(product.photo) or "none"}</span></p>
</body></html>""")

    return Starlette(
        routes=[
            Route("/", new),
            Route("/products/{id}", show),
            Route("/products/{id}/edit", edit),
            Mount("/sm", app=sm),
        ],
        lifespan=sm.lifespan,
    )


if __name__ == "__main__":
    uvicorn.run(build(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
