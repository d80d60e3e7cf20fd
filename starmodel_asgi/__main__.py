"""``python -m starmodel_asgi``: the command line (``starmodel_asgi.cli``)."""

from starmodel_asgi.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
