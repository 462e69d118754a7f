"""Who may talk to ``merc serve``: ``Host`` names (DNS rebinding), ``Origin`` (other sites'
pages), and the checks of the flags that widen them (``--allow-host``, ``--allow-origin``)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware

from merc.predict.serve.bodies import refusal

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""``Host`` names always accepted: what a browser on this machine sends for a loopback server."""


def check_port(port: int, flag: str = "port") -> int:
    """``port`` if it is a TCP port number a server can bind (1..65535), else ValueError."""
    if not 1 <= port <= 65535:
        raise ValueError(f"{flag} {port}: a port number is 1..65535")
    return port


def check_origin(origin: str, flag: str = "allow_origins") -> str:
    """``origin`` as a browser writes it (``scheme://host[:port]``, lower case), else ValueError.
    ``*`` is refused: it would hand the model to every web page the user visits."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:                       # "http://[::1" (unclosed), "http://a:99999"
        parts, port = urlsplit(""), -1
    if (origin.strip() == "*" or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment or port == -1
            or parts.username or parts.password):
        raise ValueError(f"{flag} {origin!r}: expected an origin like http://localhost:3000 "
                         "(scheme://host[:port], no path, no '*')")
    return f"{parts.scheme}://{parts.netloc.lower()}"


_HOST_NAME = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)$")


def check_host(host: str, flag: str = "allow_hosts") -> str:
    """A ``Host`` name to accept (lower case, IPv6 in brackets, no port), else ValueError."""
    name = host.strip().lower()
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"                     # a bare IPv6 literal, as --host takes it
    if not _HOST_NAME.match(name):
        raise ValueError(f"{flag} {host!r}: expected a host name or IP address (no port, "
                         "no scheme)")
    return name


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin, default ports filled in; None if unreadable."""
    try:
        parts = urlsplit(origin)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:                       # a header like "http://[::1" or "http://a:x"
        return None
    if not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname, port


class SameOrigin:
    """Refuses (403) a request whose ``Origin`` is neither the server's own nor allowed.

    Browsers add ``Origin`` to every cross-origin request and to same-origin POSTs; scripts
    and curl send none and pass. The server's own origin is ``scheme://Host``, the ``Host``
    header having been checked already (:class:`TrustedHosts`), so the page works under any
    of the server's names (127.0.0.1, localhost, ...)."""

    def __init__(self, app, allow_origins: list[str]) -> None:
        self.app = app
        self.allowed = {_origin_key(o) for o in allow_origins}

    async def __call__(self, scope, receive, send) -> None:
        # A WebSocket handshake too: browsers send Origin on every one, and no CORS guards it.
        if scope["type"] in ("http", "websocket"):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None:
                key = _origin_key(origin)
                scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"),
                                                            scope.get("scheme", "http"))
                own = _origin_key(f"{scheme}://{headers.get('host', '')}")
                if key is None or (key != own and key not in self.allowed):
                    answer = refusal(403, f"cross-origin request from {origin[:100]!r} "
                                     "refused: this server answers its own page only (merc "
                                     "serve --allow-origin ORIGIN admits another)", "Origin")
                    await answer(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class TrustedHosts(TrustedHostMiddleware):
    """Starlette's TrustedHostMiddleware decides; only its answer changes, from plain text to
    merc's one-line JSON naming the field (the page and clients read ``detail``), and it says
    how to allow another name."""

    def __init__(self, app, allowed_hosts: list[str]) -> None:
        async def trusted(scope, receive, send):
            scope["merc.trusted_host"] = True     # the request got past the check
            await app(scope, receive, send)

        super().__init__(trusted, allowed_hosts=allowed_hosts, www_redirect=False)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await super().__call__(scope, receive, send)
            return

        async def send_or_refuse(message) -> None:
            if scope.get("merc.trusted_host"):
                await send(message)
            # The middleware's own 400 (to a WebSocket handshake: Starlette's denial response).
            elif message["type"] in ("http.response.start", "websocket.http.response.start"):
                host = Headers(scope=scope).get("host", "")
                await refusal(400, f"Host {host[:100]!r} is not a name of this server (a "
                               "page on another site pointing its name here is refused; merc "
                               "serve --allow-host NAME adds one)", "Host")(scope, receive, send)
            # its plain-text body is dropped: the JSON answer is complete

        await super().__call__(scope, receive, send_or_refuse)
