"""SSRF: the ``webhook`` and ``http`` adapters call only public addresses.

The real adapters run over ``httpx.MockTransport``; host names are made up and resolved
by an injected resolver, so nothing here needs DNS or a network. What a user sees: a
refused target is a permanent ``BAD_REQUEST`` naming the address class, a host that
does not resolve is a transient ``CONNECTION_FAILED``, and nothing reaches the wire.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest
from _wire import Wire, message, respond

from sluice.actions import ActionSpec
from sluice.config import Settings
from sluice.model import ErrorClass, ErrorCode, Message, Outcome
from sluice.netguard import NO_PRIVATE_TARGETS, PrivateTargets, Resolver
from sluice.providers import build_providers
from sluice.providers.http_action import HttpActionProvider
from sluice.providers.webhook import WebhookProvider

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PUBLIC = "93.184.216.34"
CREDS = {"access_token": "at-1"}
ADAPTERS = ["webhook", "http"]


class Dns:
    """Answers from a script, one answer per lookup (the last one repeats)."""

    def __init__(self, *answers: Sequence[str] | Exception) -> None:
        self.answers = list(answers)
        self.hosts: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.hosts.append(host)
        answer = self.answers[min(len(self.hosts), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


def _webhook_message(url: str) -> Message:
    return message(channel="webhook", provider="webhook", recipient=url, payload={"order": 1})


async def send(
    adapter: str,
    url: str,
    wire: Wire,
    resolve: Resolver,
    *,
    allow_loopback: bool = False,
    follow_redirects: bool = False,
    private: PrivateTargets = NO_PRIVATE_TARGETS,
) -> Outcome:
    """One send by ``adapter`` to ``url``: a webhook's recipient, or an action's URL."""
    async with wire.client(follow_redirects=follow_redirects) as client:
        if adapter == "webhook":
            hook = WebhookProvider(
                client, SECRET, allow_loopback=allow_loopback, resolve=resolve, private=private
            )
            return await hook.send(_webhook_message(url))
        action = ActionSpec("crm.note", "POST", url, body={"text": "{payload.text}"})
        api = HttpActionProvider(
            client,
            {"crm.note": action},
            allow_loopback=allow_loopback,
            resolve=resolve,
            private=private,
        )
        note = message(
            channel="crm", provider="http", recipient="r", payload={"text": "hi"}, action="crm.note"
        )
        return await api.send(note, CREDS)


def assert_refused(outcome: Outcome, says: str) -> None:
    assert not outcome.ok
    assert outcome.code is ErrorCode.BAD_REQUEST
    assert outcome.code.error_class is ErrorClass.PERMANENT
    assert outcome.detail.startswith("target refused: ")
    assert says in outcome.detail


# -- DNS rebinding --------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_rebinding__a_name_that_turns_private_is_refused_on_the_next_send(
    adapter: str,
) -> None:
    dns = Dns([PUBLIC], ["10.0.0.5"])
    wire = Wire()
    url = "https://rebind.example/hook"

    first = await send(adapter, url, wire, dns)
    second = await send(adapter, url, wire, dns)

    assert first.ok
    assert_refused(second, "rebind.example resolves to 10.0.0.5, a private address")
    assert dns.hosts == ["rebind.example", "rebind.example"]
    assert len(wire.requests) == 1  # only the first send reached the wire


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_resolution__one_private_address_among_public_ones_is_enough_to_refuse(
    adapter: str,
) -> None:
    wire = Wire()

    outcome = await send(
        adapter, "https://multi.example/", wire, Dns([PUBLIC, "2606:4700::1111", "172.16.5.4"])
    )

    assert_refused(outcome, "resolves to 172.16.5.4, a private address")
    assert wire.requests == []


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_resolution__a_name_that_does_not_resolve_is_a_transient_failure(
    adapter: str,
) -> None:
    wire = Wire()
    nxdomain = socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    outcome = await send(adapter, "https://gone.example/", wire, Dns(nxdomain))

    assert not outcome.ok
    assert outcome.code is ErrorCode.CONNECTION_FAILED
    assert outcome.code.error_class is ErrorClass.TRANSIENT
    assert "cannot resolve gone.example" in outcome.detail
    assert wire.requests == []


# -- redirects --------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_redirect__to_the_metadata_address_is_not_followed(adapter: str) -> None:
    # Even with a client told to follow redirects: the adapters never do.
    wire = Wire(respond(302, headers={"location": "http://169.254.169.254/latest/meta-data/"}))

    outcome = await send(
        adapter, "https://hooks.example/", wire, Dns([PUBLIC]), follow_redirects=True
    )

    assert not outcome.ok
    assert outcome.code is ErrorCode.BAD_REQUEST
    assert "redirect not followed" in outcome.detail
    assert [str(r.url) for r in wire.requests] == ["https://hooks.example/"]


# -- literal addresses ---------------------------------------------------------------

REFUSED = [
    ("http://[::ffff:127.0.0.1]/", "(IPv4 127.0.0.1) is a loopback address"),
    ("http://0x7f000001/", "127.0.0.1 is a loopback address"),
    ("http://2130706433/", "127.0.0.1 is a loopback address"),
    ("http://127.0.0.1:8080/", "127.0.0.1 is a loopback address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://10.1.2.3/", "10.1.2.3 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://192.168.1.10/", "192.168.1.10 is a private address"),
    ("http://100.64.0.1/", "100.64.0.1 is a carrier-grade NAT address"),
    ("http://169.254.169.254/", "169.254.169.254 is a link-local address (a cloud metadata"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[fc00::1]/", "fc00::1 is a private (unique local) address"),
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("http://metadata.google.internal/", "metadata.google.internal is a cloud metadata host"),
]


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(("url", "says"), REFUSED)
async def test_literal__non_public_targets_are_refused_before_any_io(
    adapter: str, url: str, says: str
) -> None:
    wire = Wire()
    dns = Dns([PUBLIC])

    outcome = await send(adapter, url, wire, dns)

    assert_refused(outcome, says)
    assert wire.requests == []
    assert dns.hosts == []  # decided from the URL alone


# -- loopback, for the local simulator ---------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("url", "answer"),
    [
        ("http://127.0.0.1:8025/hook", [PUBLIC]),
        ("http://[::1]:8025/hook", [PUBLIC]),
        ("http://sim.test:8025/hook", ["127.0.0.1", "::1"]),
        ("http://localhost:8025/hook", ["127.0.0.1"]),
    ],
)
async def test_loopback__is_called_only_with_the_setting(
    adapter: str, url: str, answer: list[str]
) -> None:
    wire = Wire()
    dns = Dns(answer)

    refused = await send(adapter, url, wire, dns)
    allowed = await send(adapter, url, wire, dns, allow_loopback=True)

    assert_refused(refused, "loopback")
    assert "SLUICE_ALLOW_LOOPBACK_TARGETS" in refused.detail
    assert allowed.ok, allowed.detail
    assert [str(r.url) for r in wire.requests] == [url]


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("url", "answer", "says"),
    [
        ("http://10.0.0.5/", [PUBLIC], "10.0.0.5 is a private address"),
        ("http://169.254.169.254/", [PUBLIC], "a link-local address"),
        ("http://sim.test/", ["127.0.0.1", "192.168.0.2"], "resolves to 192.168.0.2, a private"),
    ],
)
async def test_loopback_setting__leaves_private_ranges_refused(
    adapter: str, url: str, answer: list[str], says: str
) -> None:
    wire = Wire()

    outcome = await send(adapter, url, wire, Dns(answer), allow_loopback=True)

    assert_refused(outcome, says)
    assert wire.requests == []


# -- the operator's private targets (SLUICE_ALLOW_PRIVATE_TARGETS) ------------------------

CORP = PrivateTargets.parse(["10.20.0.0/16", "fd00:1::/48", "hooks.corp.example"])


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("url", "answer"),
    [
        ("https://receiver.corp.example/in", ["10.20.0.7"]),  # resolves into a listed network
        ("https://receiver.corp.example/in", ["10.20.0.7", "fd00:1::7"]),
        ("https://hooks.corp.example/in", ["192.168.40.2"]),  # a listed name
        ("http://10.20.0.7:8080/in", [PUBLIC]),  # a literal inside a listed network
        ("http://[::ffff:10.20.0.7]/in", [PUBLIC]),
    ],
)
async def test_private_targets__a_listed_private_receiver_is_called(
    adapter: str, url: str, answer: list[str]
) -> None:
    wire = Wire()

    refused = await send(adapter, url, wire, Dns(answer))
    allowed = await send(adapter, url, wire, Dns(answer), private=CORP)

    assert_refused(refused, "SLUICE_ALLOW_PRIVATE_TARGETS")
    assert allowed.ok, allowed.detail
    assert [str(r.url) for r in wire.requests] == [url]


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("url", "answer", "says"),
    [
        ("https://hooks.corp.example/in", ["169.254.169.254"], "(a cloud metadata service)"),
        ("https://hooks.corp.example/in", ["::ffff:a9fe:a9fe"], "(a cloud metadata service)"),
        ("https://hooks.corp.example/in", ["10.20.0.7", "fe80::1"], "a link-local address"),
        ("https://hooks.corp.example/in", ["127.0.0.1"], "a loopback address"),
        ("https://any.example/in", ["100.100.100.200"], "(a cloud metadata service)"),
        ("http://169.254.169.254/latest/meta-data/", [PUBLIC], "(a cloud metadata service)"),
        ("http://[64:ff9b::a9fe:a9fe]/", [PUBLIC], "(a cloud metadata service)"),
        ("http://[fd00:ec2::254]/", [PUBLIC], "(a cloud metadata service)"),
        ("http://metadata.google.internal/", [PUBLIC], "a cloud metadata host"),
        ("https://receiver.corp.example/in", ["10.21.0.1"], "a private address"),
    ],
)
async def test_private_targets__metadata_and_link_local_are_refused_even_when_listed(
    adapter: str, url: str, answer: list[str], says: str
) -> None:
    # As wide as a list can be: every IPv4 and IPv6 network, and the name itself.
    listed = PrivateTargets.parse(["0.0.0.0/0", "::/0", "hooks.corp.example"])
    if "10.21.0.1" in answer:
        listed = CORP  # outside the networks listed, and not a listed name
    wire = Wire()

    outcome = await send(adapter, url, wire, Dns(answer), private=listed)

    assert_refused(outcome, says)
    assert wire.requests == []


# -- the tenant's OAuth endpoints ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.5/oauth/token",
        "https://[::ffff:169.254.169.254]/token",
        "https://metadata.google.internal/token",
        "https://idp.example/token",  # resolves to a private address below
    ],
)
async def test_refresh__a_token_url_that_is_not_public_holds_the_connection(url: str) -> None:
    wire = Wire()
    async with wire.client() as client:
        api = HttpActionProvider(client, {}, resolve=Dns(["192.168.7.7"]))
        result = await api.refresh({"access_token": "at", "refresh_token": "rt", "token_url": url})

    # The URL is the connection's: AUTH_REVOKED holds its messages for the operator.
    assert not result.ok and not result.transient
    assert result.code is ErrorCode.AUTH_REVOKED
    assert result.detail.startswith("token endpoint: target refused: ")
    assert wire.requests == []


async def test_check__a_check_url_that_is_not_public_is_refused() -> None:
    wire = Wire()
    async with wire.client() as client:
        api = HttpActionProvider(client, {}, resolve=Dns(["100.64.3.2"]))
        result = await api.check({**CREDS, "check_url": "https://idp.example/me"})

    assert (result.ok, result.code) == (False, ErrorCode.BAD_REQUEST)
    assert "idp.example resolves to 100.64.3.2, a carrier-grade NAT address" in result.detail
    assert wire.requests == []


# -- wiring: the setting reaches the adapters -----------------------------------------


@pytest.mark.parametrize("allow", [False, True])
async def test_build_providers__passes_allow_loopback_targets_to_the_webhook_adapter(
    allow: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./sluice.toml
    monkeypatch.delenv("SLUICE_CONFIG", raising=False)
    settings = Settings(webhook_secret=SECRET, allow_loopback_targets=allow)
    wire = Wire()
    async with wire.client() as client:
        providers = build_providers(settings, client)
        outcome = await providers["webhook"].send(_webhook_message("http://127.0.0.1:9/hook"))
        status = await providers["http"].check({**CREDS, "check_url": "http://127.0.0.1:9/me"})

    assert outcome.ok is allow
    assert status.ok is allow
    assert len(wire.requests) == (2 if allow else 0)


async def test_build_providers__passes_allow_private_targets_to_both_adapters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLUICE_CONFIG", raising=False)
    settings = Settings(webhook_secret=SECRET, allow_private_targets=("10.20.0.0/16",))
    wire = Wire()
    async with wire.client() as client:
        providers = build_providers(settings, client)
        inside = await providers["webhook"].send(_webhook_message("http://10.20.0.7/hook"))
        outside = await providers["webhook"].send(_webhook_message("http://10.21.0.7/hook"))
        metadata = await providers["webhook"].send(_webhook_message("http://169.254.169.254/"))
        status = await providers["http"].check({**CREDS, "check_url": "https://10.20.0.8/me"})

    assert inside.ok and status.ok, (inside, status)
    assert_refused(outside, "10.21.0.7 is a private address")
    assert_refused(metadata, "(a cloud metadata service)")
    assert [str(r.url) for r in wire.requests] == ["http://10.20.0.7/hook", "https://10.20.0.8/me"]
