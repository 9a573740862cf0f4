"""Who is asking: a bearer token (``web.token``), the session cookie the sign-in page sets
from it, or a user named by a trusted reverse proxy (``web.trusted_user_header``).

Every route needs one of them except the sign-in page itself. The cookie holds the user's name
and an HMAC of it keyed by the token: it reveals nothing of the token, and changing the token
signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from daemon.settings import WebSettings

COOKIE = "larc_session"
USER_HEADER = "X-Larc-User"  # optional name an API client gives with the token (for the audit)
PUBLIC_PATHS = frozenset({"/login"})


@dataclass(frozen=True)
class User:
    """A signed-in user; ``via``: token, session or proxy (kept in the audit)."""

    name: str
    via: str


class Authenticator:
    """Checks the credentials of a request against the web settings."""

    def __init__(self, settings: WebSettings) -> None:
        self.token = settings.token.get_secret_value() if settings.token else None
        self.header = settings.trusted_user_header
        self.proxies = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]

    def _sign(self, name: str) -> str:
        assert self.token is not None  # noqa: S101 (sessions exist only with a token)
        mac = hmac.new(self.token.encode(), f"session\0{name}".encode(), hashlib.sha256)
        return mac.hexdigest()

    def token_ok(self, token: str) -> bool:
        """Whether ``token`` is the configured token (constant time)."""
        return self.token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    def session_cookie(self, name: str) -> str:
        """The cookie value for a user who signed in with the token."""
        encoded = base64.urlsafe_b64encode(name.encode()).decode()
        return f"{encoded}.{self._sign(name)}"

    def user(
        self, headers: dict[str, str], cookies: dict[str, str], client_host: str | None
    ) -> User | None:
        """The user behind a request, or ``None`` (header names in lower case)."""
        if self.header and client_host is not None:
            name = headers.get(self.header.lower(), "").strip()
            if name and self._trusted(client_host):
                return User(name, "proxy")
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_ok(credential.strip()):
            return User(headers.get(USER_HEADER.lower(), "").strip() or "api-token", "token")
        cookie = cookies.get(COOKIE, "")
        if self.token is not None and "." in cookie:
            encoded, _, mac = cookie.rpartition(".")
            try:
                name = base64.urlsafe_b64decode(encoded.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                return None
            if hmac.compare_digest(mac, self._sign(name)):
                return User(name, "session")
        return None

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.proxies)
