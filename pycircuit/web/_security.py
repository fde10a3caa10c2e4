"""Who may talk to the web view (pure: strings in, verdicts out).

- Access: the token of the printed URL, as ``?token=`` (turned into an
  HttpOnly, SameSite=Strict cookie by a redirect), the cookie, or for
  ``/metrics`` also ``Authorization: Bearer <token>``. None: 401; a wrong
  one: 403.
- DNS rebinding: the ``Host`` header must name a loopback name or address,
  or the bound address, with our port.
- Controls (POST only) also need the CSRF token the page carries, and a
  same-origin ``Origin`` when the browser sends one.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


@dataclass(frozen=True)
class Guard:
    token: str
    csrf: str
    bound_host: str
    port: int
    scheme: str = "http"

    @property
    def cookie(self) -> str:
        # Cookies ignore ports: two views on one host keep one cookie each.
        return f"pycircuit-web-{self.port}"

    def host_ok(self, header: str | None) -> bool:
        """Is ``header`` (the request's Host) one of our names?"""
        if not header:
            return False
        try:
            parts = urlsplit(f"//{header}")
            name, port = parts.hostname, parts.port
        except ValueError:  # a malformed Host header is refused, not an error
            return False
        if name is None or port != self.port:
            return False
        name = name.lower()
        if name in LOOPBACK_NAMES or name == self.bound_host.lower():
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False  # a name we do not own: maybe rebound to us
        if ip.is_loopback:
            return True
        # Bound to every address: any address of ours is fine (a rebinding
        # attack names a domain, never a literal address).
        return self.bound_host in ("0.0.0.0", "::", "")

    def check(self, given: str | None) -> int:
        """200 for the right token, 401 for none, 403 for a wrong one."""
        if not given:
            return 401
        return 200 if hmac.compare_digest(given.encode(), self.token.encode()) else 403

    def bearer(self, authorization: str | None) -> str | None:
        if authorization and authorization[:7].lower() == "bearer ":
            return authorization[7:].strip()
        return None

    def csrf_ok(self, given: str | None, origin: str | None, host: str | None) -> bool:
        if not given or not hmac.compare_digest(given.encode(), self.csrf.encode()):
            return False
        return origin is None or origin == f"{self.scheme}://{host}"
