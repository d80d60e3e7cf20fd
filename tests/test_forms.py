"""Forms and page flow (DESIGN 3b): form fields before mirrored state, urlencoded and multipart
bodies with uploads, a whole form in one model parameter, errors in the entity's namespace that a
success clears, readable messages, computed fields, one patch for a list, ServerOnly kept out of
repr and HTML, redirects, action options, and page helpers that render as HTML."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from pydantic import BaseModel, Field, computed_field

from starmodel_asgi import (
    Action,
    ClientWritable,
    Entity,
    EventError,
    Message,
    Redirect,
    ServerOnly,
    StarModel,
    UploadFile,
    event,
)
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import DATASTAR, JSON
from tests.support.sse import merged_signals, parse_sse

pytestmark = pytest.mark.anyio


class ProductForm(BaseModel):
    name: Annotated[str, Field(min_length=2)]
    price: Annotated[float, Field(gt=0), Message("Enter a price above zero.")]


class Product(Entity):
    model_config = {"scope": "record", "name": "product"}
    name: str = ""
    price: float = 0
    sku: str = "ABC-001"
    api_token: Annotated[str, ServerOnly] = "sk-live-secret"
    note: Annotated[str, ClientWritable] = ""
    photo: str = ""
    photo_size: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        return f"{self.name} at {self.price:.2f}"

    @event
    def rename(self, name: str, price: float) -> None:
        self.name, self.price = name, price

    @event
    def save(self, form: ProductForm) -> Redirect:
        self.name, self.price = form.name, form.price
        return Redirect(f"/products/{self.id}")

    @event
    def reprice(self, price: float) -> None:
        if price > 1000:
            raise EventError(422, "That price needs a manager.", errors={"price": "At most 1000 without approval."})
        self.price = price

    @event
    def set_sku(self, sku: Annotated[str, Field(pattern=r"^[A-Z]{3}-\d{3}$")], count: int = 1) -> None:
        self.sku = sku

    @event
    def annotate(self, note: str, suffix: str = "") -> None:
        """``note`` is client-writable: the namespace's copy is input."""
        self.name = note + suffix

    @event
    async def upload(self, photo: UploadFile, caption: str = "") -> str:
        data = await photo.read()
        self.photo, self.photo_size = photo.filename or "", len(data)
        return f'<p id="photo">{self.photo} {self.photo_size} {caption}</p>'

    @event
    async def gallery(self, photos: list[UploadFile]) -> str:
        return f'<p id="photos">{",".join(p.filename or "" for p in photos)}</p>'

    @event
    async def maybe_photo(self, photo: UploadFile | None = None) -> str:
        return f'<p id="maybe">{photo.filename if photo else "none"}</p>'

    @event(selector="#rows", mode="inner")
    def rows(self) -> list[str]:
        return [f"<li>{i}</li>" for i in range(3)]

    @event(selector="#rows", mode="append")
    def more_rows(self) -> list[str]:
        return ["<li>a</li>", "<li>b</li>"]

    @event
    def away(self, to: str) -> Redirect:
        return Redirect(to)

    @event
    async def steps_then_away(self):  # type: ignore[no-untyped-def]
        self.price = 1
        yield None
        yield Redirect("/done")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    sm = StarModel([Product], secret_key="forms", max_body_size=64 * 1024)
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://testserver") as c:
        yield c


async def new_product(client: httpx.AsyncClient) -> str:
    r = await client.post("/product", headers=JSON, json={})
    assert r.status_code == 201
    return str(r.json()["id"])


def signals_of(r: httpx.Response) -> dict[str, object]:
    assert r.status_code == 200, r.text
    return merged_signals(parse_sse(r.text))


# -- binding -------------------------------------------------------------------------------------


async def test_a_form_field_beats_the_pages_mirror_of_the_saved_field(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    mirror = {"product": {"name": "Old", "price": 1.0}}
    r = await client.post(f"/product/{pid}/rename", headers=DATASTAR, json={**mirror, "name": "New", "price": 2})
    assert signals_of(r)["product"] == {"name": "New", "price": 2.0, "label": "New at 2.00"}
    # the mirror alone is not input: a field's copy never binds a parameter of that name
    r = await client.post(f"/product/{pid}/rename", headers=JSON, json=mirror)
    assert r.status_code == 422 and set(r.json()["errors"]) == {"name", "price"}
    assert (await client.get(f"/product/{pid}", headers=JSON)).json()["name"] == "New"


async def test_urlencoded_form_fields_bind_before_signals(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    r = await client.post(f"/product/{pid}/rename", headers=DATASTAR, data={"name": "Form", "price": "3.5"})
    assert signals_of(r)["product"]["name"] == "Form"  # type: ignore[index]


async def test_the_namespace_binds_names_that_are_not_fields_or_are_client_writable(
    client: httpx.AsyncClient,
) -> None:
    pid = await new_product(client)
    r = await client.post(f"/product/{pid}/annotate", headers=JSON, json={"product": {"note": "hi", "suffix": "!"}})
    assert r.json()["name"] == "hi!"


async def test_a_whole_form_binds_to_one_model_parameter_with_errors_by_field(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    r = await client.post(f"/product/{pid}/save", headers=JSON, data={"name": "x", "price": "-1"})
    assert r.status_code == 422
    assert r.json()["errors"] == {
        "name": "Name must be at least 2 characters long.",
        "price": "Enter a price above zero.",
    }
    r = await client.post(f"/product/{pid}/save", headers=JSON, data={"name": "Lamp", "price": "12"})
    assert r.status_code == 303 and r.headers["location"] == f"/products/{pid}"
    assert r.json()["name"] == "Lamp"


# -- multipart and uploads -------------------------------------------------------------------------


async def test_a_multipart_form_with_a_file(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    files = {"photo": ("lamp.jpg", b"x" * 1234, "image/jpeg")}
    r = await client.post(f"/product/{pid}/upload", headers=DATASTAR, files=files, data={"caption": "new"})
    events = parse_sse(r.text)
    assert r.status_code == 200
    assert [e.elements for e in events if e.event == "datastar-patch-elements"] == [
        '<p id="photo">lamp.jpg 1234 new</p>'
    ]
    state = (await client.get(f"/product/{pid}", headers=JSON)).json()
    assert (state["photo"], state["photo_size"]) == ("lamp.jpg", 1234)


async def test_several_files_and_an_empty_optional_file(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    files = [("photos", ("a.png", b"1")), ("photos", ("b.png", b"2"))]
    r = await client.post(f"/product/{pid}/gallery", headers=DATASTAR, files=files)
    assert parse_sse(r.text)[0].elements == '<p id="photos">a.png,b.png</p>'
    # a browser sends an empty file part when no file was chosen: that is no file
    empty = b'--b\r\nContent-Disposition: form-data; name="photo"; filename=""\r\n\r\n\r\n--b--\r\n'
    headers = {**DATASTAR, "Content-Type": "multipart/form-data; boundary=b"}
    r = await client.post(f"/product/{pid}/maybe_photo", headers=headers, content=empty)
    assert parse_sse(r.text)[0].elements == '<p id="maybe">none</p>'


async def test_a_missing_file_or_a_text_value_for_a_file_is_422(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    r = await client.post(f"/product/{pid}/upload", headers=JSON, files={"other": ("a", b"1")})
    assert r.status_code == 422 and r.json()["errors"] == {"photo": "Photo is required."}
    r = await client.post(f"/product/{pid}/upload", headers=JSON, data={"photo": "not a file"})
    assert r.status_code == 422 and r.json()["errors"] == {"photo": "Photo must be a file upload."}


async def test_an_oversized_upload_is_413_and_changes_nothing(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    files = {"photo": ("big.bin", b"x" * (65 * 1024))}
    r = await client.post(f"/product/{pid}/upload", headers=JSON, files=files)
    assert r.status_code == 413
    # without a Content-Length (a chunked body), the limit holds as the body streams in
    boundary = "b0undary"
    chunk = f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="big.bin"\r\n\r\n'.encode()

    async def body() -> AsyncIterator[bytes]:
        yield chunk
        for _ in range(100):
            yield b"x" * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**JSON, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = await client.post(f"/product/{pid}/upload", headers=headers, content=body())
    assert r.status_code == 413
    assert (await client.get(f"/product/{pid}", headers=JSON)).json()["photo"] == ""


async def test_a_malformed_multipart_body_is_400(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    headers = {**JSON, "Content-Type": "multipart/form-data"}  # no boundary
    r = await client.post(f"/product/{pid}/upload", headers=headers, content=b"--x\r\nnonsense")
    assert r.status_code == 400 and "form" in r.json()["error"].lower()


# -- errors in the namespace, cleared by the next success ----------------------------------------


async def test_an_event_error_lands_in_the_entity_namespace_and_a_success_clears_it(
    client: httpx.AsyncClient,
) -> None:
    pid = await new_product(client)
    r = await client.post(f"/product/{pid}/reprice", headers=DATASTAR, json={"price": 5000})
    assert r.status_code == 422
    error = merged_signals(parse_sse(r.text))["product"]
    assert error["_error"] == "That price needs a manager."
    assert error["_errors"]["price"] == "At most 1000 without approval."
    assert error["_errors"]["name"] == ""  # every other message the page may hold is blanked

    r = await client.post(f"/product/{pid}/reprice", headers=DATASTAR, json={"price": 50})
    cleared = signals_of(r)["product"]
    assert cleared["price"] == 50.0  # type: ignore[index]
    assert cleared["_error"] == "" and cleared["_errors"]["price"] == ""  # type: ignore[index]

    # with nothing left to clear, an answer carries only what changed
    r = await client.post(f"/product/{pid}/reprice", headers=DATASTAR, json={"price": 60})
    assert [e.signals for e in parse_sse(r.text)] == [{"product": {"price": 60.0, "label": " at 60.00"}}]


async def test_validation_errors_read_as_sentences_naming_the_parameter(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    r = await client.post(f"/product/{pid}/set_sku", headers=DATASTAR, json={"sku": "abc", "count": "two"})
    errors = merged_signals(parse_sse(r.text))["product"]["_errors"]
    assert errors["sku"] == "Sku is not in the expected format."
    assert errors["count"] == "Count must be a whole number."
    r = await client.post(f"/product/{pid}/rename", headers=JSON, json={"price": "cheap"})
    assert r.json()["errors"] == {"name": "Name is required.", "price": "Price must be a number."}
    assert "Invalid input" in r.json()["error"] and "Price must be a number." in r.json()["error"]


# -- what the page sees --------------------------------------------------------------------------


async def test_computed_fields_are_public_state_and_recomputed(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    assert (await client.get(f"/product/{pid}", headers=JSON)).json()["label"] == " at 0.00"
    r = await client.post(f"/product/{pid}/rename", headers=DATASTAR, json={"name": "Desk", "price": 80})
    assert signals_of(r)["product"]["label"] == "Desk at 80.00"  # type: ignore[index]
    r = await client.get(f"/product/{pid}", headers=DATASTAR)
    assert signals_of(r)["product"]["label"] == "Desk at 80.00"  # type: ignore[index]


def test_computed_fields_are_shown_but_not_stored() -> None:
    instance = Product(id="p1", name="Desk", price=3)
    assert "label" not in instance.stored_state() and instance.public_state()["label"] == "Desk at 3.00"


async def test_a_list_of_html_in_inner_mode_is_one_patch(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    for event_name, mode, html in [
        ("rows", "inner", "<li>0</li><li>1</li><li>2</li>"),
        ("more_rows", "append", "<li>a</li><li>b</li>"),
    ]:
        r = await client.post(f"/product/{pid}/{event_name}", headers=DATASTAR)
        patches = [e for e in parse_sse(r.text) if e.event == "datastar-patch-elements"]
        assert len(patches) == 1
        assert patches[0].elements == html
        assert (patches[0].get("selector"), patches[0].get("mode")) == ("#rows", mode)


async def test_server_only_fields_stay_out_of_repr_str_and_html() -> None:
    from fasthtml.common import Div, to_xml

    product = Product(id="p1", name="Lamp")
    assert "sk-live-secret" not in repr(product)
    assert "sk-live-secret" not in str(product)
    assert "sk-live-secret" not in to_xml(Div(product))
    assert "name='Lamp'" in repr(product)
    assert product.api_token == "sk-live-secret"  # still there for the server


async def test_a_redirect_navigates_a_datastar_page_and_is_303_for_json(client: httpx.AsyncClient) -> None:
    pid = await new_product(client)
    r = await client.post(f"/product/{pid}/away", headers=DATASTAR, json={"to": "/products/p'1?a=<b>"})
    (script,) = [e.elements for e in parse_sse(r.text) if e.event == "datastar-patch-elements"]
    assert "window.location" in script and "/products/p\\u00271?a=\\u003cb>" in script
    r = await client.post(f"/product/{pid}/away", headers=JSON, json={"to": "/list"})
    assert r.status_code == 303 and r.headers["location"] == "/list"
    r = await client.post(f"/product/{pid}/steps_then_away", headers=DATASTAR)
    events = parse_sse(r.text)
    assert events[0].signals["product"]["price"] == 1.0
    assert "window.location = '/done'" in events[-1].elements


async def test_a_redirect_refuses_urls_that_could_run_script(client: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="a path on this site or an http"):
        Redirect("javascript:alert(1)")
    pid = await new_product(client)
    r = await client.post(f"/product/{pid}/away", headers=JSON, json={"to": "javascript:alert(1)"})
    assert r.status_code == 422 and "alert" not in r.text  # the client's input, refused, not echoed
    assert "Redirect takes a path on this site or an http(s) URL" in r.json()["error"]


# -- page helpers ----------------------------------------------------------------------------------


def test_actions_take_datastar_options() -> None:
    StarModel([Product], secret_key="forms")
    action = Product.save(id="p1")
    assert isinstance(action, Action) and isinstance(action, str)
    assert action == "@post('/sm/product/p1/save')"
    assert action.options(contentType="form") == "@post('/sm/product/p1/save', {contentType: 'form'})"
    tricky = action.options(selector="#f'x", headers={"X-Y": "1"}, openWhenHidden=True, retryMaxCount=3)
    assert tricky == (
        "@post('/sm/product/p1/save', {selector: '#f\\'x', headers: {'X-Y': '1'}, openWhenHidden: true,"
        " retryMaxCount: 3})"
    )
    chained = action.options(retryMaxCount=1).options(payload=None)
    assert chained == "@post('/sm/product/p1/save', {retryMaxCount: 1, payload: null})"
    with pytest.raises(TypeError, match="Datastar's actions have no option contenttype"):
        action.options(contenttype="form")  # a typo is named, not sent to the page
    with pytest.raises(TypeError, match=r"save\(\) has no parameter nmae \(it takes: .*name"):
        Product.save(id="p1", nmae="x")
    with pytest.raises(TypeError):
        action.options(x=object())


def test_holders_and_actions_render_in_fasthtml_without_notstr() -> None:
    from fasthtml.common import Button, Div, to_xml

    StarModel([Product], secret_key="forms")
    html = to_xml(Div(Product.holder(Product(id="p1"), sync=None), Button("Save", data_on_click=Product.save(id="p1"))))
    assert '<div id="product-signals" data-signals=' in html
    assert "&lt;div" not in html
    assert "@post('/sm/product/p1/save')" in html
    signals = json.loads(html.split("data-signals__ifmissing='")[1].split("'")[0].replace("&quot;", '"'))
    assert signals["product"]["_error"] == "" and signals["product"]["_errors"]["price"] == ""
