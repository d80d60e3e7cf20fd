"""StarModel's counter round trip beside the peers a Python developer would pick instead.

    python benchmarks/bench_peers.py [--runs 5] [--seconds 5] [--quick]

Five apps, the same work per request (a counter per session, the session cookie verified and sent
back, an answer that patches the count), all on one Python 3.12 (stario needs it), each in its own
server process pinned to core 0, loaded by wrk on core 1 (see ``http_load``), taking turns:

- ``starmodel``: README's counter, a plain ``def`` event (``bench_events.starmodel_app``), uvicorn;
- ``baseline``: the hand-written Starlette + datastar-py endpoint (``bench_events.baseline_app``), uvicorn;
- ``stario``: ``stario_bootstrap`` below, on stario's own server (stario is not ASGI) on uvloop;
- ``fasthtml``: ``fasthtml_app`` below, FastHTML answering HTMX with an HTML fragment, uvicorn;
- ``raw``: ``raw_asgi_app`` below, no framework at all, uvicorn: what uvicorn itself costs.

The peers run from their own venv (``benchmarks/.peers-venv``, made on first use from ``PINS``, with
this project installed editable into it). Only the standard library is imported at the top: the peer
servers import this module inside that venv.
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import hmac
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peers-venv"
#: What the peers' venv holds; the uvicorn, uvloop and httptools this project's venv runs.
PINS = ["stario==5.1.1", "python-fasthtml==0.14.14", "uvicorn==0.55.0", "uvloop==0.23.0", "httptools==0.9.0"]
#: An HTMX client's ``hx-post`` from a button: no form, so an empty form body.
HTMX_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["HX-Request"] = "true"
wrk.headers["HX-Target"] = "count"
wrk.headers["Cookie"] = os.getenv("BENCH_COOKIE")
"""


# --- the peer apps, as their documentation writes them ------------------------------------------


def sign(sid: str) -> str:
    """The hand-written baseline's session cookie: the id and its HMAC."""
    digest = hmac.new(b"bench", sid.encode(), hashlib.sha256).digest()
    return f"{sid}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


def session(cookie: str) -> tuple[str, str]:
    """The session id and cookie a request's cookie verifies to, else a new session's."""
    sid = cookie.rpartition(".")[0]
    if sid and hmac.compare_digest(cookie, sign(sid)):
        return sid, cookie
    sid = secrets.token_urlsafe(24)
    return sid, sign(sid)


def stario_bootstrap() -> Any:
    """stario 5: no sessions of its own, so the hand-written baseline's signed cookie (``session``
    above), set with ``stario.cookies.set_cookie`` on every answer; the answer is a Datastar SSE
    ``patch_signals`` through ``stario.datastar.SSE``. No lock: nothing is awaited between reading
    the count and writing it."""
    from stario import App, Context, Route, Span, Writer
    from stario.cookies import set_cookie
    from stario.datastar import SSE, read_signals

    counts: dict[str, int] = {}

    async def increment(c: Context, w: Writer) -> None:
        sid, cookie = session(c.req.cookies.get("sid") or "")
        signals = await read_signals(c.req)
        amount = int(c.req.query.get("amount") or signals.get("amount", 1))
        counts[sid] = counts.get(sid, 0) + amount
        set_cookie(w, "sid", cookie, max_age=86400)
        SSE(w).patch_signals({"counter": {"count": counts[sid]}})

    async def bootstrap(app: App, span: Span):  # type: ignore[no-untyped-def]
        app.add(Route("POST", "/counter/increment"), increment)
        yield

    return bootstrap


def fasthtml_app() -> Any:
    """FastHTML's own session (Starlette's ``SessionMiddleware``: the session is a signed cookie,
    verified on every request and sent back on every answer), the count kept in it as FastHTML's
    docs do; the answer is the ``<span id="count">`` fragment HTMX swaps in."""
    from fasthtml.common import Span, fast_app

    app, rt = fast_app(secret_key="bench", pico=False, live=False)

    @rt("/counter/increment")
    def post(session, amount: int = 1):  # type: ignore[no-untyped-def]
        session["count"] = session.get("count", 0) + amount
        return Span(session["count"], id="count")

    return app


def raw_asgi_app() -> Any:
    """No framework: the least uvicorn can be asked to run for the same answer (the baseline's cookie,
    parsed by hand; datastar-py's SSE line), to tell uvicorn's share of a row from the framework's."""
    import json
    from urllib.parse import parse_qs

    from datastar_py.sse import ServerSentEventGenerator as SSE

    counts: dict[str, int] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"cookie"), "")
        sid, cookie = session(next((part[4:] for part in header.split("; ") if part.startswith("sid=")), ""))
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        signals = json.loads(body or b"{}")
        amount = int(parse_qs(scope["query_string"].decode()).get("amount", [signals.get("amount", 1)])[0])
        counts[sid] = counts.get(sid, 0) + amount
        renew = f"sid={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400".encode("latin-1")
        headers = [(b"content-type", b"text/event-stream"), (b"set-cookie", renew)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        answer = SSE.patch_signals({"counter": {"count": counts[sid]}})
        await send({"type": "http.response.body", "body": answer.encode()})

    return app


def serve_stario(port: int) -> None:
    """stario's way to serve: ``serve(bootstrap)`` on uvloop (as uvicorn runs here), no tracer (as
    uvicorn runs with ``--no-access-log``; stario's default writes a JSON span per request)."""
    import uvloop
    from stario import ServerConfig, serve

    os.environ["STARIO_TRACER"] = "noop"
    uvloop.run(serve(stario_bootstrap(), config=ServerConfig(host="127.0.0.1", port=port)))


# --- the venv, the check that each app does the work, the measurement ----------------------------


def python312() -> str | None:
    """A Python 3.12: ``STARMODEL_BENCH_PYTHON``, else pyenv's, else ``python3.12`` on the PATH."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [os.environ.get("STARMODEL_BENCH_PYTHON", "")]
    candidates += sorted(glob.glob(f"{root}/versions/3.12*/bin/python"), reverse=True)
    candidates.append(shutil.which("python3.12") or "")
    for python in filter(None, candidates):
        found = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"], capture_output=True
        )
        if found.stdout.strip() == b"True":
            return python
    return None


def peers_python(python: str) -> str:
    """The peers' venv's interpreter, made (from ``PINS`` and this project) when missing or stale."""
    marker, wanted = VENV / "pins.txt", "\n".join([python, *PINS])
    if not marker.exists() or marker.read_text() != wanted:
        subprocess.run([python, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", *PINS, "-e", str(HERE.parent)]
        installed = subprocess.run(pip, capture_output=True, text=True)
        if installed.returncode:
            raise RuntimeError(f"the peers' venv did not install ({' '.join(PINS)}):\n{installed.stderr[-2000:]}")
        marker.write_text(wanted)
    return str(VENV / "bin" / "python")


def check_work(name: str, base: str) -> None:
    """Fails unless the app counts per session: 1, then 2 with the cookie it gave, then 1 again with
    that cookie altered (verified, so a new session), the count in the answer."""
    import httpx

    def count(cookies: dict[str, str]) -> tuple[int, dict[str, str]]:
        headers = {"Datastar-Request": "true", "HX-Request": "true"}
        answer = httpx.post(f"{base}/counter/increment?amount=1", json={}, headers=headers, cookies=cookies)
        found = re.search(r'(?:"count":|id="count">)(\d+)', answer.text)
        if answer.status_code != 200 or not found:
            raise RuntimeError(f"{name}: {answer.status_code} {answer.text[:200]!r} patches no count")
        return int(found.group(1)), dict(answer.cookies) or cookies

    first, cookies = count({})
    second, _ = count(cookies)
    forged = {key: ("B" if value[0] == "A" else "A") + value[1:] for key, value in cookies.items()}
    third, _ = count(forged)
    if (first, second, third) != (1, 2, 1):
        raise RuntimeError(f"{name}: counts {first}, {second}, {third} for new, same, forged cookie (want 1, 2, 1)")


def measure(runs: int, seconds: int) -> dict[str, Any]:
    """Median figures (``bench_events.Figures``) of the five apps, alternated, on Python 3.12."""
    import http_load  # not at the top: the peer servers import this module without httpx

    found = python312()
    if found is None:
        sys.exit("the peers need a Python 3.12 (pyenv install 3.12, or set STARMODEL_BENCH_PYTHON)")
    python = peers_python(found)
    apps = {
        "starmodel": http_load.uvicorn("bench_events:starmodel_app", python),
        "baseline": http_load.uvicorn("bench_events:baseline_app", python),
        "stario": http_load.Served([python, str(HERE / "bench_peers.py"), "--serve-stario"]),
        "fasthtml": http_load.Served(http_load.uvicorn("bench_peers:fasthtml_app", python).command, HTMX_SCRIPT),
        "raw": http_load.uvicorn("bench_peers:raw_asgi_app", python),
    }
    return http_load.alternate(apps, runs, seconds, check_work)


#: Each peer's label in the table and the goals: CPU ratio (StarModel / peer) and req/s ratio.
PEERS = {
    "stario": ("stario 5.1.1 (its own server, Datastar SSE)", "1.00", ">= 1.00"),
    "fasthtml": ("FastHTML 0.14.14 + HTMX (uvicorn, HTML fragment)", "1.00", ">= 1.00"),
    "baseline": ("hand-written Starlette + datastar-py (uvicorn)", "1.10", "-"),
    "raw": ("raw ASGI, no framework (uvicorn's floor)", "-", "-"),
}


def rows(runs: int, seconds: int) -> list[str]:
    """``run.py``'s rows: per peer, CPU per request then req/s, ratio = StarModel / peer."""
    from table import cpu_rows  # not at the top, as ``http_load``

    figures = measure(runs, seconds)
    out = []
    for name, (label, goal, rate_goal) in PEERS.items():
        out += cpu_rows(
            f"counter round trip vs {label}, Python 3.12", figures[name], figures["starmodel"], goal, rate_goal
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run of one second: checks the rows run")
    parser.add_argument("--serve-stario", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stario:
        serve_stario(args.serve_stario)
        return
    print("| scenario | peer | starmodel | ratio | goal |")
    print("|---|---|---|---|---|")
    print("\n".join(rows(1, 1) if args.quick else rows(args.runs, args.seconds)))


if __name__ == "__main__":
    main()
