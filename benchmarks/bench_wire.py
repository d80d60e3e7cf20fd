"""Bytes on the wire of a live stream of HTML patches, plain and compressed.

    python benchmarks/bench_wire.py [--patches 100]

A live page of a list of 20 items; each change re-renders it. The stream is read through the
in-process ASGI driver with ``Accept-Encoding`` set to each encoding in turn.
"""

from __future__ import annotations

import argparse

import anyio
from asgi_driver import Driver
from starlette.types import Message

from starmodel_asgi import Entity, StarModel, event


class Feed(Entity):
    model_config = {"scope": "global"}
    count: int = 0

    @event
    async def post(self) -> None:
        self.count += 1

    def render(self) -> str:
        items = "".join(f'<li class="item">Item {i} of change {self.count}</li>' for i in range(20))
        return f'<ul id="feed">{items}</ul>'


async def wire(encoding: str, patches: int) -> int:
    sm = StarModel([Feed], base_path="", secret_key="bench")
    driver = Driver(sm)
    received = [0]
    bodies = anyio.Event()
    closed = anyio.Event()
    requested = [False]

    async def receive() -> Message:
        if not requested[0]:
            requested[0] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await closed.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            received[0] += len(message.get("body", b""))
            bodies.set()

    headers = [(b"datastar-request", b"true"), (b"accept-encoding", encoding.encode())]
    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.stream, "/feed/live", headers, receive, send)
        await bodies.wait()
        for _ in range(patches):
            bodies = anyio.Event()
            await driver("POST", "/feed/post", b"", b"{}", [(b"datastar-request", b"true")])
            await bodies.wait()
        closed.set()
    await sm.aclose()
    return received[0]


async def measure(patches: int) -> dict[str, int]:
    return {encoding: await wire(encoding, patches) for encoding in ("identity", "zstd")}  # streams: no br


async def main(patches: int) -> None:
    sizes = await measure(patches)
    plain = sizes["identity"]
    print(", ".join(f"{name} {size:,} bytes ({size / plain:.2f})" for name, size in sizes.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--patches", type=int, default=100)
    anyio.run(main, parser.parse_args().patches)
