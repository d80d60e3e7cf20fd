"""``Page``: a browser page's stand-in for testing your own pages, in-process, with no browser.

    async with Page(app) as page:             # your host app, or the StarModel itself
        await page.open("/")                  # the HTML page: its declared signals, its data-init
        answer = await page.run(Counter.increment(amount=2))
        assert answer.signals == {"counter": {"count": 2}}
        assert page.signals["counter"]["count"] == 2

It speaks to the ASGI app in-process through httpx (or to a real server through your own httpx
client) as Datastar's browser client would: cookies kept, every signal sent with each action
(those whose name starts with ``_`` left out), answers applied to ``page.signals`` (only ``200``
answers, as the client does). ``page.live(...)`` reads a live stream as it arrives.
``StreamingTransport`` is its wire: an httpx transport to an ASGI app that streams answers.
"""

from starmodel_asgi.extras import require

require("httpx", "testing", "starmodel_asgi.testing")


from starmodel_asgi.testing.expressions import parse_action, read_object  # noqa: E402  (after the check)
from starmodel_asgi.testing.page import LivePage, Page  # noqa: E402  (after the check)
from starmodel_asgi.testing.signals import merge  # noqa: E402  (after the check)
from starmodel_asgi.testing.sse import Answer, Event, parse_events  # noqa: E402  (after the check)
from starmodel_asgi.testing.transport import StreamingTransport  # noqa: E402  (after the check)

__all__ = [
    "Answer",
    "Event",
    "LivePage",
    "Page",
    "StreamingTransport",
    "merge",
    "parse_action",
    "parse_events",
    "read_object",
]
