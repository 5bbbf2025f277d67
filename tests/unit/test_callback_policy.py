"""The callback URL policy and SSRF address rule, without DNS or sockets."""

from __future__ import annotations

import ipaddress

import pytest

from sinas_common.callback_policy import (
    CachingResolver,
    CallbackPolicy,
    CallbackTarget,
    Resolver,
    SystemResolver,
    address_problem,
    parse_ipv4_host,
    system_resolver,
)
from sinas_common.errors import CallbackUrlRejected
from sinas_common.settings import CallbackPolicySettings


class StaticResolver:
    """Answers every lookup with fixed addresses and records what it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return list(self.answers)


class FailingResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        raise OSError("name or service not known")


def policy(hosts: str = "*", ports: str = "443", *, allow_private: bool = False) -> CallbackPolicy:
    return CallbackPolicy.from_settings(
        CallbackPolicySettings.model_validate(
            {
                "CALLBACK_URL_HOSTS": hosts,
                "CALLBACK_URL_PORTS": ports,
                "CALLBACK_ALLOW_PRIVATE_NETWORKS": allow_private,
            }
        )
    )


def rejection(url: str, pol: CallbackPolicy | None = None) -> str:
    with pytest.raises(CallbackUrlRejected) as caught:
        (pol or policy()).check_url(url)
    error = caught.value
    assert error.http_status == 400
    assert [v.field for v in error.violations] == ["callback_url"]
    assert error.violations[0].description in error.message
    return error.violations[0].description


# -- the host policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("hosts", ["", " ", ",", " , "])
def test_unset_or_empty_hosts_disable_callbacks(hosts: str) -> None:
    pol = policy(hosts)
    assert not pol.enabled
    assert rejection("https://example.com/hook", pol) == (
        "callbacks are not enabled on this instance"
    )


def test_star_allows_any_public_host() -> None:
    target = policy("*").check_url("https://hooks.example.com/cb?x=1&y=2")
    assert target == CallbackTarget(
        url="https://hooks.example.com/cb?x=1&y=2",
        host="hooks.example.com",
        port=443,
        target="/cb?x=1&y=2",
    )


def test_listed_hosts_match_exactly_and_case_insensitively() -> None:
    pol = policy("Hooks.Example.com, other.example.org")
    assert pol.check_url("https://HOOKS.example.COM/x").host == "hooks.example.com"
    assert pol.check_url("https://other.example.org").target == "/"
    assert "not in the allowed callback hosts" in rejection("https://example.com/", pol)
    assert "not in the allowed callback hosts" in rejection("https://a.hooks.example.com/", pol)
    assert "not in the allowed callback hosts" in rejection("https://hooks.example.com.evil/", pol)


def test_trailing_dot_is_the_same_host() -> None:
    assert policy("example.com").check_url("https://example.com./a").host == "example.com"


def test_listed_numeric_host_matches_its_canonical_address() -> None:
    pol = policy("127.0.0.1", allow_private=True)
    assert pol.check_url("https://2130706433/").host == "127.0.0.1"
    assert pol.check_url("https://127.1/").host == "127.0.0.1"


# -- scheme, credentials, host, port -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://example.com/", "ftp://example.com/", "HTTP://example.com", "example.com/hook", ""],
)
def test_only_https(url: str) -> None:
    assert rejection(url) == "only https URLs are allowed"


def test_https_scheme_is_case_insensitive() -> None:
    assert policy().check_url("HTTPS://example.com/").host == "example.com"


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@example.com/",
        "https://user@example.com/",
        "https://:pass@example.com/",
        "https://@example.com/",
    ],
)
def test_no_credentials(url: str) -> None:
    assert rejection(url) == "credentials in the URL are not allowed"


@pytest.mark.parametrize("url", ["https:///path", "https://", "https://:443/"])
def test_host_required(url: str) -> None:
    assert rejection(url) == "the URL has no host"


def test_default_port_only_unless_listed() -> None:
    assert rejection("https://example.com:8443/") == "port 8443 is not allowed"
    assert policy().check_url("https://example.com:443/").port == 443
    listed = policy(ports="8443, 9443")
    assert listed.check_url("https://example.com:8443/").port == 8443
    # 443 stays allowed when the operator lists others.
    assert listed.check_url("https://example.com/").port == 443
    assert rejection("https://example.com:80/", listed) == "port 80 is not allowed"


@pytest.mark.parametrize("url", ["https://example.com:99999/", "https://example.com:abc/"])
def test_malformed_port(url: str) -> None:
    assert rejection(url).startswith("not a valid URL")


@pytest.mark.parametrize("ports", ["abc", "0", "70000"])
def test_malformed_port_setting_fails_fast(ports: str) -> None:
    with pytest.raises(ValueError):
        policy(ports=ports)


@pytest.mark.parametrize(
    "url",
    [
        "https://exa mple.com/",
        "https://example.com/\n",
        "https://ex%61mple.com/",
        "https://exa$mple.com/",
        "https://-example.com/",
        "https://example..com/",
    ],
)
def test_malformed_hosts(url: str) -> None:
    description = rejection(url)
    assert "host" in description or "whitespace" in description


def test_ipv6_zone_identifier_rejected() -> None:
    assert rejection("https://[fe80::1%25eth0]/") == "IPv6 zone identifiers are not allowed"


def test_international_host_becomes_its_ascii_form() -> None:
    assert policy().check_url("https://bücher.example/").host == "xn--bcher-kva.example"


def test_host_header_carries_a_non_default_port_and_brackets() -> None:
    pol = policy(ports="8443")
    assert pol.check_url("https://example.com/").host_header == "example.com"
    assert pol.check_url("https://example.com:8443/").host_header == "example.com:8443"
    v6 = pol.check_url("https://[2606:4700::1111]:8443/a")
    assert v6.host == "2606:4700::1111"
    assert v6.host_header == "[2606:4700::1111]:8443"


def test_fragment_is_not_part_of_the_request_target() -> None:
    assert policy().check_url("https://example.com/p?q=1#frag").target == "/p?q=1"


# -- numeric host spellings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("10.0.0.1.", "10.0.0.1"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("8.8.8.8", "8.8.8.8"),
        ("0x", "0.0.0.0"),
    ],
)
def test_numeric_spellings_denote_addresses(spelling: str, address: str) -> None:
    assert parse_ipv4_host(spelling) == ipaddress.IPv4Address(address)


@pytest.mark.parametrize("name", ["example.com", "1.example.com", "localhost", "a1"])
def test_names_are_not_numeric(name: str) -> None:
    assert parse_ipv4_host(name) is None


@pytest.mark.parametrize("spelling", ["1.2.3.4.5", "256.0.0.1", "08.0.0.1", "1.16777216", "a.1"])
def test_invalid_numeric_spellings(spelling: str) -> None:
    with pytest.raises(ValueError):
        parse_ipv4_host(spelling)


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/",
        "https://0x7f.1/",
        "https://0177.0.0.1/",
        "https://127.1/",
        "https://127.0.0.1/",
        "https://0/",
        "https://0xa9fea9fe/latest/meta-data/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:7f00:1]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:7f00:1::]/",
    ],
)
def test_numeric_hosts_obey_the_address_rule(url: str) -> None:
    assert "resolves to" in rejection(url)


def test_numeric_host_not_a_valid_address() -> None:
    assert rejection("https://1.2.3.4.5/") == "the host 1.2.3.4.5 is not a valid IPv4 address"


def test_public_numeric_host_is_a_literal_target() -> None:
    target = policy().check_url("https://134744072/x")
    assert target.host == "8.8.8.8"
    assert target.literal_address == ipaddress.IPv4Address("8.8.8.8")


def test_allow_private_networks_lifts_only_the_address_rule() -> None:
    pol = policy("*", allow_private=True)
    assert pol.check_url("https://127.0.0.1/").literal_address == ipaddress.IPv4Address("127.0.0.1")
    assert rejection("http://127.0.0.1/", pol) == "only https URLs are allowed"
    assert rejection("https://u:p@127.0.0.1/", pol) == "credentials in the URL are not allowed"


# -- the address rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("10.1.2.3", "private"),
        ("100.64.0.1", "shared address space (CGNAT)"),
        ("100.127.255.254", "shared address space (CGNAT)"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("169.254.169.254", "link-local"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.0.0.8", "reserved"),
        ("192.0.2.1", "documentation"),
        ("192.88.99.1", "reserved"),
        ("192.168.1.1", "private"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::7f00:1", "reserved"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private (unique local)"),
        ("fd12:3456::1", "private (unique local)"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("2001:2::1", "benchmarking"),
        ("2001:10::1", "reserved"),
        ("100::1", "discard-only"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("4000::1", "reserved"),
    ],
)
def test_not_globally_routable(address: str, why: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize(
    ("address", "form"),
    [
        ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254, link-local"),
        ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, private"),
        ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1, loopback"),
        ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254, link-local"),
        ("64:ff9b::6440:1", "NAT64 form of 100.64.0.1, shared address space (CGNAT)"),
        ("2002:7f00:1::1", "6to4 form of 127.0.0.1, loopback"),
        ("2002:c0a8:101::", "6to4 form of 192.168.1.1, private"),
        # Teredo: server 65.54.227.120, client obfuscated 127.0.0.1 (bits inverted).
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo form of 127.0.0.1, loopback"),
        ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "Teredo form of 10.0.0.1, private"),
    ],
)
def test_embedded_ipv4_judged_as_what_it_carries(address: str, form: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == form


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "2606:4700:4700::1111",
        "2a00:1450:4001:81c::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
    ],
)
def test_globally_routable(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


# -- resolution ----------------------------------------------------------------------------------


async def test_resolve_returns_every_checked_address_once() -> None:
    pol = policy()
    target = pol.check_url("https://hooks.example.com:443/x")
    resolver = StaticResolver("93.184.216.34", "2606:4700::1111", "93.184.216.34")
    assert await pol.resolve(target, resolver) == [
        ipaddress.ip_address("93.184.216.34"),
        ipaddress.ip_address("2606:4700::1111"),
    ]
    assert resolver.asked == [("hooks.example.com", 443)]


@pytest.mark.parametrize(
    "answers",
    [
        ("127.0.0.1",),
        ("93.184.216.34", "10.0.0.1"),
        ("169.254.169.254",),
        ("::ffff:127.0.0.1",),
        ("fe80::1%eth0",),
        ("2606:4700::1111", "::1"),
    ],
)
async def test_resolve_rejects_when_any_address_is_not_public(answers: tuple[str, ...]) -> None:
    pol = policy()
    target = pol.check_url("https://rebind.example.com/")
    with pytest.raises(CallbackUrlRejected) as caught:
        await pol.resolve(target, StaticResolver(*answers))
    description = caught.value.violations[0].description
    assert description.startswith("host rebind.example.com resolves to ")


async def test_resolve_allows_private_answers_when_lifted() -> None:
    pol = policy(allow_private=True)
    target = pol.check_url("https://localhost/")
    assert await pol.resolve(target, StaticResolver("127.0.0.1", "::1")) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


async def test_resolve_rejects_unresolvable_empty_and_malformed_answers() -> None:
    pol = policy()
    target = pol.check_url("https://nowhere.example.com/")
    cases: list[tuple[Resolver, str]] = [
        (FailingResolver(), "host nowhere.example.com could not be resolved"),
        (StaticResolver(), "host nowhere.example.com resolved to no address"),
        (StaticResolver("not-an-ip"), "host nowhere.example.com resolved to a malformed address"),
    ]
    for resolver, expected in cases:
        with pytest.raises(CallbackUrlRejected) as caught:
            await pol.resolve(target, resolver)
        assert caught.value.violations[0].description == expected


async def test_literal_address_is_not_looked_up() -> None:
    pol = policy()
    target = pol.check_url("https://[2606:4700::1111]/")
    resolver = StaticResolver("127.0.0.1")
    assert await pol.resolve(target, resolver) == [ipaddress.ip_address("2606:4700::1111")]
    assert resolver.asked == []


async def test_system_resolver_resolves_localhost() -> None:
    addresses = await SystemResolver().resolve("localhost", 443)
    assert addresses
    assert all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_caching_resolver_reuses_a_lookup_until_it_expires() -> None:
    inner = StaticResolver("93.184.216.34")
    clock = FakeClock()
    cached = CachingResolver(inner, ttl_seconds=5, clock=clock)
    assert await cached.resolve("hooks.example.com", 443) == ["93.184.216.34"]
    clock.now += 4.9
    assert await cached.resolve("hooks.example.com", 443) == ["93.184.216.34"]
    assert inner.asked == [("hooks.example.com", 443)]
    # Another port is another entry.
    await cached.resolve("hooks.example.com", 8443)
    clock.now += 0.2
    inner.answers = ["93.184.216.35"]
    assert await cached.resolve("hooks.example.com", 443) == ["93.184.216.35"]
    assert inner.asked == [
        ("hooks.example.com", 443),
        ("hooks.example.com", 8443),
        ("hooks.example.com", 443),
    ]


class FailingTwiceResolver(StaticResolver):
    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if len(self.asked) <= 2:
            raise OSError("temporary failure in name resolution")
        return list(self.answers)


async def test_caching_resolver_keeps_no_failure() -> None:
    inner = FailingTwiceResolver("93.184.216.34")
    cached = CachingResolver(inner, ttl_seconds=60, clock=FakeClock())
    for _ in range(2):
        with pytest.raises(OSError):
            await cached.resolve("hooks.example.com", 443)
    assert await cached.resolve("hooks.example.com", 443) == ["93.184.216.34"]
    assert await cached.resolve("hooks.example.com", 443) == ["93.184.216.34"]
    assert len(inner.asked) == 3


async def test_caching_resolver_drops_the_oldest_entry_when_full() -> None:
    inner = StaticResolver("93.184.216.34")
    cached = CachingResolver(inner, ttl_seconds=60, max_entries=2, clock=FakeClock())
    for host in ("a.example.com", "b.example.com", "c.example.com", "b.example.com"):
        await cached.resolve(host, 443)
    await cached.resolve("a.example.com", 443)
    assert [host for host, _ in inner.asked] == [
        "a.example.com",
        "b.example.com",
        "c.example.com",
        "a.example.com",
    ]


async def test_a_cached_lookup_is_still_checked_on_every_use() -> None:
    # The cache holds answers, not verdicts: a private answer is refused each time, and a
    # policy that stops allowing private networks refuses what a laxer one accepted.
    cached = CachingResolver(StaticResolver("127.0.0.1"), ttl_seconds=60, clock=FakeClock())
    lax, strict = policy(allow_private=True), policy()
    target = lax.check_url("https://hooks.example.com/")
    assert await lax.resolve(target, cached) == [ipaddress.ip_address("127.0.0.1")]
    for _ in range(2):
        with pytest.raises(CallbackUrlRejected):
            await strict.resolve(target, cached)


def test_zero_cache_seconds_looks_up_every_time() -> None:
    assert isinstance(system_resolver(0), SystemResolver)
    assert isinstance(system_resolver(5), CachingResolver)
