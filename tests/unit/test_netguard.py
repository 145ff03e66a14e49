"""The SSRF guard on its own: which targets it refuses, what it says, when it resolves.

No DNS and no network: host names are made up and answered by an injected resolver.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from sluice import ConfigError, load_settings
from sluice.model import ErrorClass, ErrorCode
from sluice.netguard import (
    METADATA_HOSTS,
    TargetGuard,
    UnresolvedHost,
    check_url_syntax,
    static_resolver,
    system_resolve,
)

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


class Resolver:
    """Answers from a script, one answer per call (the last one repeats); records hosts."""

    def __init__(self, *answers: Sequence[str] | Exception) -> None:
        self.answers = list(answers)
        self.hosts: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.hosts.append(host)
        answer = self.answers[min(len(self.hosts), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


# -- IP literals: every spelling, every class ----------------------------------------

REFUSED_LITERALS = [
    ("http://10.0.0.5/", "10.0.0.5 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://172.31.255.254/", "a private address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://100.64.0.1/", "100.64.0.1 is a carrier-grade NAT address"),
    ("http://169.254.169.254/latest/meta-data/", "link-local address (a cloud metadata service)"),
    ("http://169.254.1.1/", "169.254.1.1 is a link-local address"),
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("http://0.1.2.3/", "('this network') address"),
    ("http://224.0.0.1/", "a multicast address"),
    ("http://255.255.255.255/", "a broadcast address"),
    ("http://240.0.0.1/", "a reserved address"),
    ("http://192.0.2.10/", "a documentation address"),
    ("http://198.18.0.1/", "a benchmarking address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[fe80::1%25eth0]/", "a link-local address"),
    ("http://[fc00::1]/", "fc00::1 is a private (unique local) address"),
    ("http://[fd00:ec2::254]/", "(unique local) address (a cloud metadata service)"),
    ("http://[fec0::1]/", "a site-local address"),
    ("http://[ff02::1]/", "a multicast address"),
    ("http://[::]/", ":: is an unspecified address"),
    ("http://[2001:db8::1]/", "a documentation address"),
    ("http://[::ffff:10.0.0.5]/", "(IPv4 10.0.0.5) is a private address"),
    ("http://[2002:a00:1::]/", "(IPv4 10.0.0.1) is a private address"),  # 6to4
    ("http://[64:ff9b::a9fe:a9fe]/", "(IPv4 169.254.169.254) is a link-local address"),  # NAT64
    ("http://[::7f00:1]/", "a non-public address"),  # IPv4-compatible, deprecated
]

LOOPBACK_LITERALS = [
    ("http://127.0.0.1:8080/", "127.0.0.1"),
    ("http://127.9.9.9/", "127.9.9.9"),
    ("http://[::1]/", "::1"),
    ("http://[::ffff:127.0.0.1]/", "(IPv4 127.0.0.1)"),
    # Spellings the system resolver turns into 127.0.0.1 (inet_aton rules).
    ("http://2130706433/", "127.0.0.1"),
    ("http://0x7f000001/", "127.0.0.1"),
    ("http://0x7f.1/", "127.0.0.1"),
    ("http://127.1/", "127.0.0.1"),
    ("http://0177.1/", "127.0.0.1"),
    ("http://127.0.0.1./", "127.0.0.1"),
]


@pytest.mark.parametrize(("url", "says"), REFUSED_LITERALS)
@pytest.mark.parametrize("allow_loopback", [False, True])
def test_check_url_syntax__refuses_non_public_literals_even_with_loopback_allowed(
    url: str, says: str, allow_loopback: bool
) -> None:
    problem = check_url_syntax(url, allow_loopback=allow_loopback)

    assert problem is not None
    assert says in problem


@pytest.mark.parametrize(("url", "address"), LOOPBACK_LITERALS)
def test_check_url_syntax__loopback_in_any_spelling_only_when_allowed(
    url: str, address: str
) -> None:
    problem = check_url_syntax(url, allow_loopback=False)

    assert problem is not None
    assert f"{address} is a loopback address" in problem
    assert "SLUICE_ALLOW_LOOPBACK_TARGETS" in problem
    assert check_url_syntax(url, allow_loopback=True) is None


@pytest.mark.parametrize(
    "url",
    [
        f"https://{PUBLIC_V4}/hook",
        f"https://[{PUBLIC_V6}]/hook",
        "https://[::ffff:93.184.216.34]/",  # mapped public: judged as the IPv4 it is
        "https://[64:ff9b::5db8:d822]/",  # NAT64 of a public address (DNS64 networks)
        "https://hooks.example.com:8443/a?b=c",
        "http://HOOKS.Example.COM./",
        "https://bücher.example/",
        "https://_acme.example/",
        "https://1e100.net/",
    ],
)
def test_check_url_syntax__accepts_public_literals_and_well_formed_names(url: str) -> None:
    assert check_url_syntax(url, allow_loopback=False) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://files.example/x", "not ftp://"),
        ("file:///etc/passwd", "not file://"),
        ("gopher://x.example/", "not gopher://"),
        ("//x.example/", "without a scheme"),
        ("http:///path", "has no host"),
        ("http://1.2.3.4.5/", "not a valid IPv4 address"),
        ("http://example.123/", "not a valid IPv4 address"),
        ("http://08.1/", "not a valid IPv4 address"),
        ("http://%31%32%37.0.0.1/", "not a valid"),
        ("http://a b.example/", "not a valid host name"),
        ("http://exa$mple.com/", "not a valid host name"),
        ("http://[not-an-ip/", "not a valid host name"),
        ("http://0177.0.0.1/", "not a valid URL"),  # httpx itself refuses this spelling
    ],
)
def test_check_url_syntax__refuses_other_schemes_and_malformed_hosts(url: str, says: str) -> None:
    problem = check_url_syntax(url, allow_loopback=True)

    assert problem is not None
    assert says in problem


@pytest.mark.parametrize("host", sorted(METADATA_HOSTS))
def test_check_url_syntax__refuses_metadata_host_names(host: str) -> None:
    for url in (f"http://{host}/", f"http://{host.upper()}./computeMetadata/v1/"):
        problem = check_url_syntax(url, allow_loopback=True)
        assert problem == f"{host} is a cloud metadata host"


def test_check_url_syntax__localhost_names_are_loopback() -> None:
    for url in ("http://localhost:8000/", "http://LOCALHOST./", "http://api.localhost/"):
        problem = check_url_syntax(url, allow_loopback=False)
        assert problem is not None and "is a loopback name" in problem
        assert check_url_syntax(url, allow_loopback=True) is None


# -- at send time: resolution ---------------------------------------------------------


async def test_check__accepts_a_name_whose_every_address_is_public() -> None:
    resolve = Resolver([PUBLIC_V4, PUBLIC_V6])

    assert await TargetGuard(resolve=resolve).check(httpx.URL("https://hooks.example/")) is None
    assert resolve.hosts == ["hooks.example"]


@pytest.mark.parametrize(
    ("addresses", "says"),
    [
        (["10.0.0.5"], "hooks.example resolves to 10.0.0.5, a private address"),
        ([PUBLIC_V4, "10.0.0.5"], "resolves to 10.0.0.5, a private address"),
        ([PUBLIC_V6, "fd12::1"], "resolves to fd12::1, a private (unique local) address"),
        (["169.254.169.254"], "a link-local address (a cloud metadata service)"),
        (["100.100.100.200"], "a carrier-grade NAT address (a cloud metadata service)"),
        (["::ffff:127.0.0.1"], "resolves to ::ffff:7f00:1 (IPv4 127.0.0.1), a loopback address"),
        (["127.0.0.1"], "resolves to 127.0.0.1, a loopback address"),
        (["0.0.0.0"], "an unspecified address"),
        (["fe80::1%eth0"], "a link-local address"),
        (["not-an-address"], "which is not an IP address"),
    ],
)
async def test_check__refuses_a_name_when_any_address_is_not_public(
    addresses: list[str], says: str
) -> None:
    guard = TargetGuard(resolve=Resolver(addresses))

    problem = await guard.check(httpx.URL("https://hooks.example/x"))

    assert problem is not None
    assert says in problem


async def test_check__resolves_again_for_every_check() -> None:
    # DNS rebinding: public for the first check, private for the second.
    resolve = Resolver([PUBLIC_V4], ["10.0.0.5"])
    guard = TargetGuard(resolve=resolve)
    url = httpx.URL("https://rebind.example/")

    first = await guard.check(url)
    second = await guard.check(url)

    assert first is None
    assert second == "rebind.example resolves to 10.0.0.5, a private address"
    assert resolve.hosts == ["rebind.example", "rebind.example"]


async def test_check__resolves_the_ascii_form_of_the_name_without_its_trailing_dot() -> None:
    resolve = Resolver([PUBLIC_V4])

    await TargetGuard(resolve=resolve).check(httpx.URL("https://Bücher.Example./"))

    assert resolve.hosts == ["xn--bcher-kva.example"]


async def test_check__does_not_resolve_literals_metadata_names_or_bad_schemes() -> None:
    resolve = Resolver([PUBLIC_V4])
    guard = TargetGuard(resolve=resolve)

    assert await guard.check(httpx.URL(f"https://{PUBLIC_V4}/")) is None
    assert await guard.check(httpx.URL("http://10.0.0.5/")) is not None
    assert await guard.check(httpx.URL("http://metadata.google.internal/")) is not None
    assert await guard.check(httpx.URL("ftp://hooks.example/")) is not None
    assert resolve.hosts == []


async def test_check__loopback_answers_only_with_loopback_allowed() -> None:
    url = httpx.URL("http://sim.example:8025/")

    refused = await TargetGuard(resolve=Resolver(["127.0.0.1", "::1"])).check(url)
    allowed = await TargetGuard(True, Resolver(["127.0.0.1", "::1"])).check(url)
    private = await TargetGuard(True, Resolver(["127.0.0.1", "10.0.0.5"])).check(url)

    assert refused is not None and "loopback address" in refused
    assert allowed is None
    assert private == "sim.example resolves to 10.0.0.5, a private address"


@pytest.mark.parametrize(
    "failure",
    [socket.gaierror(socket.EAI_NONAME, "Name or service not known"), []],
    ids=["nxdomain", "no-addresses"],
)
async def test_check__a_name_that_does_not_resolve_raises_unresolved_host(
    failure: Exception | list[str],
) -> None:
    guard = TargetGuard(resolve=Resolver(failure))

    with pytest.raises(UnresolvedHost) as caught:
        await guard.check(httpx.URL("https://gone.example/"))

    assert caught.value.host == "gone.example"


# -- screen: the outcome an adapter records --------------------------------------------


async def test_screen__refusal_is_a_permanent_bad_request_naming_the_class() -> None:
    guard = TargetGuard(resolve=Resolver(["10.0.0.5"]))

    outcome = await guard.screen("https://hooks.example/")

    assert outcome is not None and not outcome.ok
    assert outcome.code is ErrorCode.BAD_REQUEST
    assert outcome.code.error_class is ErrorClass.PERMANENT
    assert outcome.detail == "target refused: hooks.example resolves to 10.0.0.5, a private address"


async def test_screen__dns_failure_is_a_transient_connection_failure() -> None:
    guard = TargetGuard(resolve=Resolver(socket.gaierror(socket.EAI_AGAIN, "try again")))

    outcome = await guard.screen("https://hooks.example/")

    assert outcome is not None and outcome.code is ErrorCode.CONNECTION_FAILED
    assert outcome.code.error_class is ErrorClass.TRANSIENT
    assert "cannot resolve hooks.example" in outcome.detail


async def test_screen__lets_a_public_target_through_and_refuses_an_unparseable_one() -> None:
    guard = TargetGuard(resolve=static_resolver(PUBLIC_V4))

    assert await guard.screen("https://hooks.example/") is None
    bad = await guard.screen("http://999.1.1.1/")
    assert bad is not None and bad.code is ErrorCode.BAD_REQUEST


async def test_system_resolve__answers_an_address_without_dns() -> None:
    assert await system_resolve("127.0.0.1") == ["127.0.0.1"]


# -- the setting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("off", False)],
)
def test_setting__allow_loopback_targets_is_read_as_a_boolean(
    raw: str, value: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./sluice.toml

    settings = load_settings(env={"SLUICE_ALLOW_LOOPBACK_TARGETS": raw})

    assert settings.allow_loopback_targets is value


def test_setting__allow_loopback_targets_is_off_by_default_and_read_from_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={}).allow_loopback_targets is False
    (tmp_path / "sluice.toml").write_text("[sluice]\nallow_loopback_targets = true\n")
    assert load_settings(env={}).allow_loopback_targets is True


def test_setting__allow_loopback_targets_refuses_a_value_that_is_not_a_boolean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError, match="SLUICE_ALLOW_LOOPBACK_TARGETS"):
        load_settings(env={"SLUICE_ALLOW_LOOPBACK_TARGETS": "sometimes"})
