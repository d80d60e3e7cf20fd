"""Request headers the tests send: a Datastar request, a JSON client."""

DATASTAR = {"Datastar-Request": "true"}
JSON = {"Accept": "application/json"}
