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
    PrivateTargets,
    TargetGuard,
    UnresolvedHost,
    check_url_syntax,
    pinned,
    static_resolver,
    system_resolve,
)

PUBLIC_V4 = "93.184.216.34"
#: What a refusal of a private address adds: the operator may list it.
HINT = (
    "; private targets are allowed only when the operator lists them in "
    "SLUICE_ALLOW_PRIVATE_TARGETS"
)
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
    assert second == f"rebind.example resolves to 10.0.0.5, a private address{HINT}"
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
    assert private == f"sim.example resolves to 10.0.0.5, a private address{HINT}"


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
    assert outcome.detail == (
        f"target refused: hooks.example resolves to 10.0.0.5, a private address{HINT}"
    )


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


# -- the operator's private targets (SLUICE_ALLOW_PRIVATE_TARGETS) ----------------------

CORP = PrivateTargets.parse(["10.20.0.0/16", "fd00:1::/48", "hooks.corp.example", "*.svc.corp"])
#: As wide as a list can be: still never link-local, metadata, loopback or "this host".
EVERYTHING = PrivateTargets.parse(["0.0.0.0/0", "::/0"])


@pytest.mark.parametrize(
    "url",
    [
        "http://10.20.0.7/hook",
        "http://10.20.255.255:8443/",
        "http://0x0a140007/",  # inet_aton spellings connect to the same address
        "http://169082887/",
        "http://10.20.7/",
        "http://[::ffff:10.20.0.7]/",  # IPv4-mapped: judged as the IPv4 it stands for
        "http://[::ffff:a14:7]/",
        "http://[64:ff9b::a14:7]/",  # NAT64
        "http://[fd00:1::5]/",
        "http://[FD00:1:0:ffff::1]/",
    ],
)
def test_private_targets__a_literal_in_a_listed_network_passes_in_any_spelling(url: str) -> None:
    assert check_url_syntax(url, allow_loopback=False, private=CORP) is None
    problem = check_url_syntax(url, allow_loopback=False)
    assert problem is not None and "SLUICE_ALLOW_PRIVATE_TARGETS" in problem


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://10.21.0.1/", "10.21.0.1 is a private address"),
        ("http://192.168.1.1/", "192.168.1.1 is a private address"),
        ("http://[::ffff:10.21.0.1]/", "(IPv4 10.21.0.1) is a private address"),
        ("http://[fd00:2::5]/", "fd00:2::5 is a private (unique local) address"),
        ("http://100.64.0.1/", "a carrier-grade NAT address"),
    ],
)
def test_private_targets__a_private_literal_outside_the_list_is_refused_saying_how_to_allow_it(
    url: str, says: str
) -> None:
    problem = check_url_syntax(url, allow_loopback=False, private=CORP)

    assert problem is not None and says in problem
    assert problem.endswith(HINT)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "(a cloud metadata service)"),
        ("http://0xa9fea9fe/", "(a cloud metadata service)"),
        ("http://2852039166/", "(a cloud metadata service)"),
        ("http://[::ffff:169.254.169.254]/", "(a cloud metadata service)"),
        ("http://[::ffff:a9fe:a9fe]/", "(a cloud metadata service)"),
        ("http://[64:ff9b::a9fe:a9fe]/", "(a cloud metadata service)"),
        ("http://169.254.170.2/v2/credentials", "(a cloud metadata service)"),
        ("http://100.100.100.200/latest/meta-data/", "(a cloud metadata service)"),
        ("http://[fd00:ec2::254]/", "(a cloud metadata service)"),
        ("http://169.254.1.1/", "a link-local address"),
        ("http://[fe80::1]/", "a link-local address"),
        ("http://[fe80::1%25eth0]/", "a link-local address"),
        ("http://0.0.0.0/", "an unspecified address"),
        ("http://0.1.2.3/", "('this network') address"),
        ("http://[::]/", "an unspecified address"),
        ("http://[::a14:7]/", "a non-public address"),  # IPv4-compatible, deprecated
        ("http://224.0.0.1/", "a multicast address"),
        ("http://255.255.255.255/", "a broadcast address"),
        ("http://127.0.0.1/", "a loopback address"),
        ("http://[::1]/", "a loopback address"),
        ("http://metadata.google.internal/", "a cloud metadata host"),
    ],
)
def test_private_targets__metadata_link_local_and_loopback_stay_refused_under_any_list(
    url: str, says: str
) -> None:
    problem = check_url_syntax(url, allow_loopback=False, private=EVERYTHING)

    assert problem is not None and says in problem
    assert "SLUICE_ALLOW_PRIVATE_TARGETS" not in problem  # listing cannot allow these


def test_private_targets__the_widest_list_admits_every_other_private_address() -> None:
    for url in ("http://10.1.2.3/", "http://172.16.0.1/", "http://[fc00::1]/"):
        assert check_url_syntax(url, allow_loopback=False, private=EVERYTHING) is None, url


@pytest.mark.parametrize(
    ("host", "answer"),
    [
        ("hooks.corp.example", ["10.99.0.1"]),  # a listed name: any private address
        ("HOOKS.Corp.Example.", ["10.99.0.1", "fd12::1"]),
        ("a.svc.corp", ["192.168.3.4"]),  # under a listed wildcard
        ("b.a.svc.corp", ["100.64.0.9"]),
        ("anything.example", ["10.20.3.4", "fd00:1::9"]),  # answers inside listed networks
        ("anything.example", ["10.20.3.4", PUBLIC_V4]),
    ],
)
async def test_private_targets__names_pass_when_listed_or_resolving_inside_a_listed_network(
    host: str, answer: list[str]
) -> None:
    guard = TargetGuard(resolve=Resolver(answer), private=CORP)

    assert await guard.check(httpx.URL(f"https://{host}/in")) is None
    assert pinned(host) == tuple(answer)  # and the connection goes to exactly these


@pytest.mark.parametrize(
    ("host", "answer", "says"),
    [
        ("svc.corp", ["10.99.0.1"], "a private address"),  # the wildcard is for names under it
        ("hooks.corp.example.evil.example", ["10.99.0.1"], "a private address"),
        ("xhooks.corp.example", ["10.99.0.1"], "a private address"),
        ("anything.example", ["10.20.3.4", "10.21.0.1"], "resolves to 10.21.0.1, a private"),
        ("hooks.corp.example", ["169.254.169.254"], "(a cloud metadata service)"),
        ("hooks.corp.example", ["::ffff:169.254.169.254"], "(a cloud metadata service)"),
        ("hooks.corp.example", ["10.99.0.1", "fe80::1"], "a link-local address"),
        ("a.svc.corp", ["100.100.100.200"], "(a cloud metadata service)"),
        ("a.svc.corp", ["127.0.0.1"], "a loopback address"),
        ("a.svc.corp", ["0.0.0.0"], "an unspecified address"),
    ],
)
async def test_private_targets__names_outside_the_list_or_resolving_to_metadata_are_refused(
    host: str, answer: list[str], says: str
) -> None:
    guard = TargetGuard(resolve=Resolver(answer), private=CORP)

    problem = await guard.check(httpx.URL(f"https://{host}/in"))

    assert problem is not None and says in problem


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("10.20.0.5/16", "has host bits set: did you mean 10.20.0.0/16?"),
        ("10.20", "odd spelling of 10.0.0.20"),
        ("0x0a000000/8", "neither a network in CIDR notation"),
        ("010.0.0.0/8", "neither a network in CIDR notation"),
        ("10.0.0.0/33", "neither a network in CIDR notation"),
        ("hooks.corp:8443", "neither a network in CIDR notation"),
        ("bad name.example", "is not a valid host name"),
        ("*.", "is not a valid host name"),
        ("169.254.0.0/16", "link-local, where cloud metadata services answer"),
        ("169.254.169.254", "link-local"),
        ("fe80::/10", "link-local"),
        ("::ffff:169.254.0.0/112", "link-local"),
        ("100.100.100.200", "is a cloud metadata service"),
        ("fd00:ec2::254/128", "is a cloud metadata service"),
        ("0.0.0.0/8", "'this host' addresses"),
        ("224.0.0.0/4", "multicast"),
        ("127.0.0.0/8", "only SLUICE_ALLOW_LOOPBACK_TARGETS allows"),
        ("::1", "only SLUICE_ALLOW_LOOPBACK_TARGETS allows"),
        ("localhost", "only SLUICE_ALLOW_LOOPBACK_TARGETS allows"),
        ("metadata.google.internal", "is a cloud metadata host"),
        ("*.metadata.google.internal", "is a cloud metadata host"),
    ],
)
def test_private_targets__a_bad_entry_is_a_config_error_naming_it(entry: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PrivateTargets.parse(["10.0.0.0/8", entry])

    assert str(caught.value).startswith(f"SLUICE_ALLOW_PRIVATE_TARGETS: {entry!r} ")
    assert says in str(caught.value)


def test_private_targets__entries_are_kept_in_one_spelling() -> None:
    listed = PrivateTargets.parse(
        ["10.20.0.0/16", " Hooks.Corp.Example. ", "*.SVC.corp", "[fd00:1::]/48", "10.20.0.0/16"]
    )
    mapped = PrivateTargets.parse(["::ffff:10.20.0.0/112"])

    assert listed.entries() == ["10.20.0.0/16", "fd00:1::/48", "hooks.corp.example", "*.svc.corp"]
    assert mapped.entries() == ["10.20.0.0/16"]
    assert not PrivateTargets.parse([]) and listed


def test_setting__allow_private_targets_from_the_environment_and_from_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={}).private_targets == PrivateTargets()

    env = {"SLUICE_ALLOW_PRIVATE_TARGETS": "10.20.0.0/16, hooks.corp.example  *.svc.corp"}
    from_env = load_settings(env=env).private_targets
    (tmp_path / "sluice.toml").write_text(
        '[sluice]\nallow_private_targets = ["10.20.0.0/16", "hooks.corp.example", "*.svc.corp"]\n'
    )
    from_toml = load_settings(env={}).private_targets

    assert (
        from_env
        == from_toml
        == PrivateTargets.parse(["10.20.0.0/16", "hooks.corp.example", "*.svc.corp"])
    )


@pytest.mark.parametrize(
    ("toml", "env", "says"),
    [
        ("", "10.0.0.0/8, 169.254.169.254", "'169.254.169.254' is link-local"),
        ("allow_private_targets = [10]", None, "is not a list of strings"),
        ("allow_private_targets = true", None, "is not a list of strings"),
        ('allow_private_targets = ["10.0.0.1/8"]', None, "did you mean 10.0.0.0/8?"),
    ],
)
def test_setting__allow_private_targets_refuses_what_it_cannot_use(
    toml: str, env: str | None, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sluice.toml").write_text(f"[sluice]\n{toml}\n")

    with pytest.raises(ConfigError, match=r"(?i)allow_private_targets") as caught:
        load_settings(env={"SLUICE_ALLOW_PRIVATE_TARGETS": env} if env else {})

    assert says in str(caught.value)


def test_setting__allow_private_targets_refuses_a_bare_string_from_python() -> None:
    from sluice.config import Settings

    with pytest.raises(ConfigError, match="must be a list"):
        Settings(allow_private_targets="10.0.0.0/8")  # type: ignore[arg-type]
