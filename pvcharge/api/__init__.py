"""The local HTTP API of the daemon: status, mode, config, OpenAPI, Prometheus metrics and a live status
page (:mod:`pvcharge.api.server`, ``start_api``); ``pvcharge status`` and ``pvcharge mode`` talk to it
(:mod:`pvcharge.api.cli`).

Nothing is imported here, so the command line loads :mod:`pvcharge.api.cli` without the server and
prometheus_client.
"""


def url_for(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for an error answer, cut to ``limit`` characters and ``…`` (a client's text can be
    long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
