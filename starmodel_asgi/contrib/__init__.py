"""Glue for host frameworks that need some: ``contrib.django``, ``contrib.litestar``, ``contrib.fasthtml``.

Each module imports its framework; the core never does.
"""
