"""The Datastar 1.0.1 browser client for offline browser tests, obtained by the project itself.

The build comes from a pinned wheel on PyPI (``starhtml==0.7.0`` ships it as
``starhtml/static/js/datastar-core.js``; StarHTML patched it lightly, the protocol is Datastar
1.0's), checked against its SHA-256 and cached in ``tests/.datastar/`` (git-ignored), so a plain
clone needs only PyPI, once.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Mount, Route

from starmodel_asgi import StarModel

WHEEL = "starhtml==0.7.0"
MEMBER = "starhtml/static/js/datastar-core.js"
SHA256 = "31c8c9efb895beadeba5f73407c3ca60201dee321c5dea56c182817b475bde9f"
CACHE = Path(__file__).resolve().parents[1] / ".datastar"


def datastar_client(cache: Path = CACHE) -> Path:
    """The path of a verified ``datastar.js``, downloading it on first use."""
    target = cache / "datastar.js"
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        subprocess.run(
            [*pip, "--python-version", "3.12", WHEEL, "-d", tmp],
            check=True,
            capture_output=True,
        )
        (wheel,) = Path(tmp).glob("starhtml-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"{WHEEL}'s {MEMBER} has SHA-256 {digest}, not the pinned {SHA256}")
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def script_route(client: Path, path: str = "/static/datastar.js") -> Route:
    """Serves the Datastar client at ``path``."""

    async def script(request: Request) -> FileResponse:
        return FileResponse(client, media_type="text/javascript")

    return Route(path, script)


def page_site(client: Path, sm: StarModel, page: Callable[[], str]) -> Starlette:
    """A host: ``page()`` at ``/``, the client at ``/static/datastar.js``, ``sm`` at its ``base_path``."""

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(page())

    return Starlette(routes=[Route("/", home), script_route(client), Mount(sm.base_path, sm)])
