"""Helpers for the tests (not tests themselves): hosts to mount the app under, real servers and
workers, an SSE parser, shared entities, request headers, service URLs and the Datastar client."""
