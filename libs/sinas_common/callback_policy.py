"""Which callback URLs are allowed and which addresses they may reach (the SSRF guard).

The scheduler checks a URL at submit time and the notifier checks it again at delivery, both
through `CallbackPolicy`: `check_url` applies the host, scheme, credential and port rules
without DNS; `resolve` looks the host up and applies the address rule to every answer, and
returns the addresses delivery must connect to (so DNS is never asked a second time).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from sinas_common.errors import CallbackUrlRejected, FieldViolation
from sinas_common.expiring import ExpiringCache
from sinas_common.settings import CallbackPolicySettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORT = 443
FIELD = "callback_url"

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_IPV4_NUMBER = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")


# Not globally routable, with the reason a rejection names. Listed explicitly rather than
# trusting `is_global` alone, whose tables differ between Python releases.
_IPV4_BLOCKED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_IPV6_BLOCKED: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    # Also covers the deprecated IPv4-compatible form ::a.b.c.d.
    ("::/8", "reserved"),
    ("100::/64", "discard-only"),
    ("2001:db8::/32", "documentation"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "reserved"),
    ("2001:20::/28", "reserved"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_IPV4_BLOCKED_NETS = tuple((ipaddress.IPv4Network(c), why) for c, why in _IPV4_BLOCKED)
_IPV6_BLOCKED_NETS = tuple((ipaddress.IPv6Network(c), why) for c, why in _IPV6_BLOCKED)
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
# IETF protocol assignments: not routable, except the Teredo prefix handled on its own.
_IETF_PROTOCOL = ipaddress.IPv6Network("2001::/23")


def address_problem(address: IPAddress) -> str | None:
    """Why `address` is not globally routable, or None when it is.

    Embedded IPv4 addresses (IPv4-mapped, NAT64, 6to4, Teredo) are judged as the IPv4
    address they carry.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4_problem(address)
    if address.ipv4_mapped is not None:
        return _embedded("IPv4-mapped", address.ipv4_mapped)
    if address in _NAT64_WELL_KNOWN:
        return _embedded("NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        return _embedded("6to4", address.sixtofour)
    if address in _TEREDO and address.teredo is not None:
        server, client = address.teredo
        return _embedded("Teredo", server) or _embedded("Teredo", client)
    for network, why in _IPV6_BLOCKED_NETS:
        if address in network:
            return why
    if address in _IETF_PROTOCOL:
        return "reserved"
    if address not in _GLOBAL_UNICAST_V6:
        return "reserved"
    return None


def _ipv4_problem(address: ipaddress.IPv4Address) -> str | None:
    for network, why in _IPV4_BLOCKED_NETS:
        if address in network:
            return why
    if not address.is_global:
        return "not globally routable"
    return None


def _embedded(form: str, inner: ipaddress.IPv4Address) -> str | None:
    problem = _ipv4_problem(inner)
    return None if problem is None else f"{form} form of {inner}, {problem}"


def _reject(description: str) -> CallbackUrlRejected:
    return CallbackUrlRejected(
        f"{FIELD} rejected: {description}",
        violations=[FieldViolation(field=FIELD, description=description)],
    )


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host spells the way browsers and inet_aton read it, else None.

    `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` all denote 127.0.0.1. A host whose last
    label is a number is an IPv4 address or invalid (ValueError), never a DNS name.
    """
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels.pop()
    if not labels or not _IPV4_NUMBER.match(labels[-1]):
        return None
    if len(labels) > 4:
        raise ValueError("too many parts for an IPv4 address")
    numbers = [_parse_ipv4_number(label) for label in labels]
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise ValueError("IPv4 address part out of range")
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _parse_ipv4_number(label: str) -> int:
    if not _IPV4_NUMBER.match(label):
        raise ValueError("not a number")
    if label[:2] in ("0x", "0X"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label[1:], 8)
    return int(label, 10)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackTarget:
    """A callback URL that passed the policy: where to connect and what to send as Host/SNI."""

    url: str
    # Lower-case ASCII host name, or the canonical text of a literal address.
    host: str
    port: int
    # Path and query as sent on the request line; "/" when the URL has no path.
    target: str
    # Set when the URL names an address instead of a host name.
    literal_address: IPAddress | None = None

    @property
    def host_header(self) -> str:
        """The Host header value: the host, bracketed if IPv6, with the port unless 443."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORT else f"{host}:{self.port}"


class Resolver(Protocol):
    """Looks a host name up: every address it resolves to, as text."""

    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The operating system's resolver, through the event loop's getaddrinfo."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]


class CachingResolver:
    """Another resolver's answers, kept for `ttl_seconds` per (host, port), as a DNS cache
    would keep them: a notifier sending to one host asks once per period, not once per
    callback (the lookup cost more CPU than the rest of a delivery). It caches lookups, not
    verdicts: the policy still checks every address on every use. Failed lookups are not
    kept; past `max_entries`, the oldest entry makes room."""

    def __init__(
        self,
        inner: Resolver,
        *,
        ttl_seconds: float,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl = ttl_seconds
        self._entries: ExpiringCache[tuple[str, int], tuple[str, ...]] = ExpiringCache(
            max_entries=max_entries, clock=clock
        )

    async def resolve(self, host: str, port: int) -> list[str]:
        found = self._entries.get((host, port))
        if found is not None:
            return list(found)
        addresses = await self._inner.resolve(host, port)
        self._entries.put((host, port), tuple(addresses), seconds=self._ttl)
        return addresses


def system_resolver(cache_seconds: float) -> Resolver:
    """The system's resolver, behind a cache of `cache_seconds` (0: every call looks up)."""
    if cache_seconds <= 0:
        return SystemResolver()
    return CachingResolver(SystemResolver(), ttl_seconds=cache_seconds)


class CallbackPolicy:
    """CALLBACK_URL_HOSTS, CALLBACK_URL_PORTS and the address rule, applied to one URL."""

    def __init__(
        self,
        *,
        hosts: Iterable[str] = (),
        any_host: bool = False,
        ports: Iterable[int] = (),
        allow_private_networks: bool = False,
    ) -> None:
        self._hosts = frozenset(_normalise_allowed_host(h) for h in hosts)
        self._any_host = any_host
        self._ports = frozenset({DEFAULT_PORT, *ports})
        self.allow_private_networks = allow_private_networks

    @classmethod
    def from_settings(cls, settings: CallbackPolicySettings) -> CallbackPolicy:
        """Builds the policy; a malformed port list raises ValueError (fail fast at start)."""
        entries = [h.strip() for h in settings.url_hosts.split(",") if h.strip()]
        ports: list[int] = []
        for raw in settings.url_ports.split(","):
            if not raw.strip():
                continue
            port = int(raw.strip())
            if not 1 <= port <= 65535:
                raise ValueError(f"CALLBACK_URL_PORTS: {port} is not a TCP port")
            ports.append(port)
        return cls(
            hosts=[h for h in entries if h != "*"],
            any_host="*" in entries,
            ports=ports,
            allow_private_networks=settings.allow_private_networks,
        )

    @property
    def enabled(self) -> bool:
        """False when CALLBACK_URL_HOSTS is unset or empty: every callback URL is refused."""
        return self._any_host or bool(self._hosts)

    def check_url(self, url: str) -> CallbackTarget:
        """Applies every rule that needs no DNS; raises CallbackUrlRejected naming the reason."""
        if not self.enabled:
            raise _reject("callbacks are not enabled on this instance")
        if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
            raise _reject("the URL contains whitespace or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise _reject(f"not a valid URL ({exc})") from exc
        if parts.scheme.lower() != "https":
            raise _reject("only https URLs are allowed")
        if "@" in parts.netloc:
            raise _reject("credentials in the URL are not allowed")
        raw_host = parts.hostname or ""
        if not raw_host:
            raise _reject("the URL has no host")
        host, literal = _normalise_host(raw_host, bracketed="[" in parts.netloc)
        port = DEFAULT_PORT if port is None else port
        if port not in self._ports:
            raise _reject(f"port {port} is not allowed")
        if not self._any_host and host not in self._hosts:
            raise _reject(f"host {host} is not in the allowed callback hosts")
        if literal is not None:
            self._check_address(host, literal)
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        return CallbackTarget(url=url, host=host, port=port, target=target, literal_address=literal)

    async def resolve(self, target: CallbackTarget, resolver: Resolver) -> list[IPAddress]:
        """Every address the host resolves to, each checked; what delivery must connect to."""
        if target.literal_address is not None:
            self._check_address(target.host, target.literal_address)
            return [target.literal_address]
        try:
            answers = await resolver.resolve(target.host, target.port)
        except OSError as exc:
            raise _reject(f"host {target.host} could not be resolved") from exc
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                # A scope id (fe80::1%eth0) only ever comes with a link-local address.
                address = ipaddress.ip_address(answer.split("%", 1)[0])
            except ValueError as exc:
                raise _reject(f"host {target.host} resolved to a malformed address") from exc
            self._check_address(target.host, address)
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise _reject(f"host {target.host} resolved to no address")
        return addresses

    def _check_address(self, host: str, address: IPAddress) -> None:
        if self.allow_private_networks:
            return
        problem = address_problem(address)
        if problem is not None:
            raise _reject(f"host {host} resolves to {address}, which is {problem}")


def _normalise_host(raw: str, *, bracketed: bool) -> tuple[str, IPAddress | None]:
    """Lower-case ASCII name or canonical address text, plus the address when it is one."""
    if bracketed:
        if "%" in raw:
            raise _reject("IPv6 zone identifiers are not allowed")
        try:
            v6 = ipaddress.IPv6Address(raw)
        except ValueError as exc:
            raise _reject("the host is not a valid IPv6 address") from exc
        return str(v6), v6
    try:
        host = raw.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise _reject("the host is not a valid host name") from exc
    try:
        v4 = parse_ipv4_host(host)
    except ValueError as exc:
        raise _reject(f"the host {host} is not a valid IPv4 address") from exc
    if v4 is not None:
        return str(v4), v4
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _reject("the host is not a valid host name")
    return name, None


def _normalise_allowed_host(entry: str) -> str:
    host = entry.strip().lower().removeprefix("[").removesuffix("]").removesuffix(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        v4 = parse_ipv4_host(host)
    except ValueError:
        v4 = None
    return str(v4) if v4 is not None else host
