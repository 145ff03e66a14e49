"""Which URLs Sluice may call on a tenant's behalf: the guard against SSRF.

A tenant names the URL of a webhook (``recipient``), the token endpoint and the check
URL of its OAuth connection, and values inside configured action URLs. Left unchecked,
that lets a tenant make our workers call the cloud metadata service
(``169.254.169.254``), the database on ``10.0.0.5`` or an admin port on ``127.0.0.1``,
and read the answer back from the attempt's detail.

The rule: ``http``/``https`` only, and every address the host resolves to must be
public. Loopback is allowed only when the operator says so
(``SLUICE_ALLOW_LOOPBACK_TARGETS``, for the local provider simulator); private,
link-local, carrier-grade NAT and every other non-public range stay refused even then.

An operator whose receivers live on its own network lists those networks and host
names in ``SLUICE_ALLOW_PRIVATE_TARGETS`` (``PrivateTargets``): an address in a listed
network, or any private address a listed name resolves to, is then allowed. Some
addresses are never allowed, listed or not: link-local (``169.254.0.0/16``,
``fe80::/10``, where cloud metadata services answer), the metadata services' own
addresses, "this host" (``0.0.0.0/8``, ``::``), multicast and broadcast; loopback
follows its own switch only. The list is the operator's, in the environment or
``sluice.toml``: no tenant and no API call can change it.

``TargetGuard.check`` runs right before each call, resolving the host every time: a
name that answered with a public address for the first send and with ``10.0.0.5`` for
the second (DNS rebinding) is refused on the second. ``check_url_syntax`` is the part
that needs no DNS, for input validation at enqueue time.

The connection is pinned to what was checked: a successful ``check`` records the
host's vetted addresses for the current task (``pinned``), and the worker's transport
resolves through them instead of asking DNS again — so a resolver answering
differently between the check and the connect gains nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx

from sluice.errors import ConfigError, ProviderError
from sluice.outcome import ErrorCode, Outcome

__all__ = [
    "METADATA_HOSTS",
    "NO_PRIVATE_TARGETS",
    "PrivateTargets",
    "Resolver",
    "TargetGuard",
    "UnresolvedHost",
    "check_url_syntax",
    "pinned",
    "private_targets",
    "static_resolver",
    "system_resolve",
]

#: host -> the addresses ``check`` vetted for it, in the current task.
_PINS: contextvars.ContextVar[dict[str, tuple[str, ...]]] = contextvars.ContextVar("sluice_pins")


def pinned(host: str) -> tuple[str, ...] | None:
    """The addresses ``TargetGuard.check`` vetted for ``host`` in this task, if any."""
    return _PINS.get({}).get(host.lower().rstrip("."))


def _pin(host: str, addresses: Sequence[str]) -> None:
    pins = dict(_PINS.get({}))
    pins[host.lower().rstrip(".")] = tuple(addresses)
    _PINS.set(pins)


#: Resolves a host name to the IP addresses (as text) a connection could go to.
Resolver = Callable[[str], Awaitable[Sequence[str]]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Host names of cloud metadata services; refused by name, whatever they resolve to
#: (inside a VPC they resolve to link-local or private addresses, refused anyway).
METADATA_HOSTS = frozenset(
    {
        "metadata",  # GCE's short name, through the resolver's search domains
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",  # AWS EC2
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)

#: Addresses of metadata services, named in the refusal so an operator sees the attack.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)

_LOOPBACK_HINT = (
    "; loopback targets are allowed only with SLUICE_ALLOW_LOOPBACK_TARGETS=true "
    "(the local provider simulator)"
)

_PRIVATE_HINT = (
    "; private targets are allowed only when the operator lists them in "
    "SLUICE_ALLOW_PRIVATE_TARGETS"
)

#: Refused even inside a network the operator listed: link-local is where the cloud
#: metadata services answer; the others reach this host under another name (0.0.0.0,
#: ``::``, the deprecated IPv4-compatible ``::a.b.c.d``) or are no unicast target.
_NEVER_LISTED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), label)
    for net, label in (
        ("0.0.0.0/8", "'this host' addresses"),
        ("169.254.0.0/16", "link-local, where cloud metadata services answer"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("::/96", "unspecified or IPv4-compatible (deprecated) addresses"),
        ("fe80::/10", "link-local, where cloud metadata services answer"),
        ("ff00::/8", "multicast"),
    )
)

#: Non-public ranges, most specific first; the label is what a refusal calls them.
#: ``ipaddress`` knows most of these too, but what it calls global differs between
#: Python versions (3.11 calls 224.0.0.0/4 and fec0::/10 global), so the ones that
#: matter are spelt out, and ``is_global`` catches the rest.
_RANGES: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), label)
    for net, label in (
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("169.254.0.0/16", "a link-local address"),
        ("192.0.0.0/24", "an IETF protocol assignment address"),
        ("192.0.2.0/24", "a documentation address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "a broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
        ("2001:db8::/32", "a documentation address"),
        ("2001::/32", "a Teredo address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
    )
)

#: The well-known NAT64 prefix (RFC 6052): the last 32 bits are the IPv4 destination.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: A DNS label as it can appear in a URL host after IDNA encoding (``_`` is not valid in
#: host names but common in internal DNS, and harmless: the address decides).
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
#: One part of an IPv4 address in the forms ``inet_aton`` accepts: decimal, octal
#: (leading 0) or hex (0x); ``getaddrinfo`` takes ``0x7f000001`` or ``2130706433``.
_NUMERIC_PART = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Where IPv4-mapped IPv6 addresses live (``::ffff:a.b.c.d``).
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True, slots=True)
class PrivateTargets:
    """The operator's list of private networks and host names webhooks and http
    actions may call (``SLUICE_ALLOW_PRIVATE_TARGETS``); empty by default.

    ``networks`` admit the addresses in them; ``names`` admit every private address
    the name resolves to; ``suffixes`` do the same for every name under them
    (``*.corp.example`` lists ``hooks.corp.example``, not ``corp.example`` itself).
    Nothing in it admits loopback or a never-listed range (see the module docstring).
    """

    networks: tuple[Network, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls, entries: Iterable[str], source: str = "SLUICE_ALLOW_PRIVATE_TARGETS"
    ) -> PrivateTargets:
        """The list from its entries: CIDR networks or addresses (``10.20.0.0/16``,
        ``fd00:1::/48``, ``10.20.0.7``), host names (``hooks.corp.example``) and
        wildcards (``*.corp.example``). Raises ``ConfigError`` naming ``source`` and the
        entry for one that is malformed or names only what is never called."""
        networks: list[Network] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for raw in entries:
            entry = raw.strip()
            try:
                if entry.startswith("*."):
                    suffixes.append("." + _listed_name(entry[2:]))
                elif "/" in entry or ":" in entry or _ip_literal(entry.lower()) is not None:
                    networks.append(_listed_network(entry))
                else:
                    names.add(_listed_name(entry))
            except ValueError as exc:
                raise ConfigError(f"{source}: {entry!r} {exc}") from None
        return cls(tuple(dict.fromkeys(networks)), frozenset(names), tuple(dict.fromkeys(suffixes)))

    def __bool__(self) -> bool:
        return bool(self.networks or self.names or self.suffixes)

    def entries(self) -> list[str]:
        """The list in a canonical spelling, for logs and the audit log."""
        return [
            *(str(n) for n in self.networks),
            *sorted(self.names),
            *("*" + s for s in self.suffixes),
        ]

    def admits(self, address: IPAddress, host: str | None = None) -> bool:
        """Whether the list covers ``address`` (reached through the name ``host``, if
        any). Says nothing about what is never admitted: ``_address_problem`` decides."""
        if any(address in net for net in self.networks if net.version == address.version):
            return True
        if host is None:
            return False
        return host in self.names or any(host.endswith(s) for s in self.suffixes)


#: The default: no private target is allowed.
NO_PRIVATE_TARGETS = PrivateTargets()


@functools.lru_cache(maxsize=32)
def private_targets(
    entries: tuple[str, ...], source: str = "SLUICE_ALLOW_PRIVATE_TARGETS"
) -> PrivateTargets:
    """``PrivateTargets.parse``, remembered: enqueue asks for the list on every call."""
    return PrivateTargets.parse(entries, source)


def _listed_network(entry: str) -> Network:
    """A network entry as a network (IPv4-mapped ones as the IPv4 network they are)."""
    text = entry.removeprefix("[").replace("]", "")
    try:
        net = ipaddress.ip_network(text)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            spelled = _ip_literal(text.lower()) if "/" not in text else None
            if isinstance(spelled, ipaddress.IPv4Address):
                raise ValueError(
                    f"is an odd spelling of {spelled}: write addresses and networks in "
                    f"dotted-quad CIDR notation ({spelled}/32)"
                ) from None
            raise ValueError(
                "is neither a network in CIDR notation (10.20.0.0/16, fd00:1::/48) nor a host name"
            ) from exc
        raise ValueError(f"has host bits set: did you mean {loose}?") from None
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED) and net.prefixlen >= 96:
        net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    if net.is_loopback:
        raise ValueError(
            "is loopback, which only SLUICE_ALLOW_LOOPBACK_TARGETS allows (for the local "
            "provider simulator)"
        )
    for never, label in _NEVER_LISTED:
        if net.version == never.version and net.subnet_of(never):  # type: ignore[arg-type]  # same version checked
            raise ValueError(f"is {label}: Sluice never calls it, listed or not")
    if net.num_addresses == 1 and net.network_address in _METADATA_ADDRESSES:
        raise ValueError("is a cloud metadata service: Sluice never calls it, listed or not")
    return net


def _listed_name(entry: str) -> str:
    """A host name entry in the form ``_host_of`` gives (IDNA, lower case, no dot at
    the end)."""
    try:
        host = _host_of(httpx.URL(f"http://{entry}/"))
    except (httpx.InvalidURL, ValueError):
        raise ValueError("is not a valid host name") from None
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        raise ValueError("is not a valid host name")
    if host in METADATA_HOSTS:
        raise ValueError("is a cloud metadata host: Sluice never calls it, listed or not")
    if host == "localhost" or host.endswith(".localhost"):
        raise ValueError(
            "is a loopback name, which only SLUICE_ALLOW_LOOPBACK_TARGETS allows (for the "
            "local provider simulator)"
        )
    return host


class UnresolvedHost(ProviderError):
    """The target's host name could not be resolved (a transient failure: DNS may
    answer on the next try)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"cannot resolve {host}: {reason}")
        self.host = host
        self.reason = reason


async def system_resolve(host: str) -> list[str]:
    """The addresses the operating system's resolver gives for ``host``, as text."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def static_resolver(*addresses: str) -> Resolver:
    """A resolver answering ``addresses`` for every host, for tests with made-up names.

    ``static_resolver("93.184.216.34")`` lets an adapter call ``https://hooks.example``
    over ``httpx.MockTransport`` without DNS.
    """
    answer = list(addresses)

    async def resolve(host: str) -> list[str]:
        return list(answer)

    return resolve


def check_url_syntax(
    url: str, *, allow_loopback: bool, private: PrivateTargets = NO_PRIVATE_TARGETS
) -> str | None:
    """What is wrong with ``url`` as a call target, as far as can be told without DNS.

    ``None`` when nothing is: the scheme is http(s), the host is a well-formed name
    (not a metadata host) or an IP literal of a public class, or in a network of
    ``private``. A name that passes may still resolve to a refused address;
    ``TargetGuard.check`` finds that at send time.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        return f"not a valid URL: {exc}"
    problem, _ = _host_problem(parsed, allow_loopback, private)
    return problem


class TargetGuard:
    """Refuses URLs whose host is, or resolves to, anything but a public address.

    ``allow_loopback`` admits 127.0.0.0/8 and ::1 (and ``localhost``), for the local
    provider simulator; ``private`` admits the operator's private networks and names
    (never link-local or metadata addresses). ``resolve`` replaces the system resolver
    (tests supply made-up host names with it).
    """

    def __init__(
        self,
        allow_loopback: bool = False,
        resolve: Resolver | None = None,
        private: PrivateTargets = NO_PRIVATE_TARGETS,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.private = private
        self._resolve = resolve or system_resolve
        #: (scheme, host) -> ``_host_problem``'s answer, which depends on nothing else:
        #: the spelling is judged once per host, the name still resolved on every send.
        self._judged: dict[tuple[str, bytes], tuple[str | None, bool]] = {}

    async def check(self, url: httpx.URL) -> str | None:
        """Why ``url`` must not be called, or ``None`` when it may be.

        Resolves the host now (never from a cache of ours), and refuses when any of
        its addresses is refused: the client may connect to any of them. Raises
        ``UnresolvedHost`` when the name does not resolve.
        """
        key = (url.scheme, url.raw_host)
        judged = self._judged.get(key)
        if judged is None:
            judged = _host_problem(url, self.allow_loopback, self.private)
            if len(self._judged) >= 4096:
                self._judged.clear()
            self._judged[key] = judged
        problem, literal = judged
        if problem is not None or literal:
            return problem
        host = _host_of(url)
        try:
            addresses = list(await self._resolve(host))
        except (OSError, UnicodeError, ValueError) as exc:  # socket.gaierror is an OSError
            raise UnresolvedHost(host, str(exc) or type(exc).__name__) from exc
        if not addresses:
            raise UnresolvedHost(host, "no addresses")
        for text in addresses:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                return f"{host} resolves to {text!r}, which is not an IP address"
            refused = _address_problem(address, self.allow_loopback, self.private, host)
            if refused is not None:
                return f"{host} resolves to {_shown(address)}, {refused}"
        _pin(host, addresses)
        return None

    async def screen(self, url: httpx.URL | str) -> Outcome | None:
        """``check`` as the outcome of a send that must not happen, or ``None``.

        A refused target is permanent (``BAD_REQUEST``): sending again cannot change
        what the URL is. A name that does not resolve is ``CONNECTION_FAILED``: DNS may
        answer next time. Nothing is raised.
        """
        try:
            target = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            return Outcome.failure(ErrorCode.BAD_REQUEST, f"not a valid URL: {exc}")
        try:
            problem = await self.check(target)
        except UnresolvedHost as exc:
            return Outcome.failure(ErrorCode.CONNECTION_FAILED, str(exc)[:300])
        if problem is None:
            return None
        return Outcome.failure(ErrorCode.BAD_REQUEST, f"target refused: {problem}"[:500])


def _host_of(url: httpx.URL) -> str:
    # raw_host is the IDNA (ASCII) form the client connects with; a trailing dot only
    # makes the name absolute.
    return url.raw_host.decode("ascii", errors="replace").lower().rstrip(".")


def _host_problem(
    url: httpx.URL, allow_loopback: bool, private: PrivateTargets
) -> tuple[str | None, bool]:
    """What is wrong with the scheme and host of ``url`` without resolving it, and
    whether the host is an IP literal (so there is nothing to resolve)."""
    if url.scheme not in ("http", "https"):
        given = f"{url.scheme}://" if url.scheme else "a URL without a scheme"
        return f"only http:// and https:// URLs are called, not {given}", False
    host = _host_of(url)
    if not host:
        return "the URL has no host", False
    literal = _ip_literal(host)
    if isinstance(literal, str):
        return literal, True
    if literal is not None:
        # A listed name does not admit a literal: it was no name that was written.
        refused = _address_problem(literal, allow_loopback, private)
        return (None if refused is None else f"{_shown(literal)} is {refused}"), True
    if host in METADATA_HOSTS:
        return f"{host} is a cloud metadata host", False
    if host == "localhost" or host.endswith(".localhost"):
        # RFC 6761: these names are loopback, whatever a resolver says.
        return (None if allow_loopback else f"{host} is a loopback name{_LOOPBACK_HINT}"), False
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        return f"{host!r} is not a valid host name", False
    return None, False


def _ip_literal(host: str) -> IPAddress | str | None:
    """The address ``host`` spells, a problem text for a malformed one, or ``None`` for
    a name. IPv4 counts in every spelling the system resolver accepts (``127.1``,
    ``0x7f000001``, ``2130706433``, ``0177.0.0.1``), since it would connect there."""
    if ":" in host:  # httpx only gives a colon for a bracketed IPv6 literal
        try:
            return ipaddress.IPv6Address(host.replace("%25", "%"))
        except ValueError:
            return f"{host!r} is not a valid IPv6 address"
    parts = host.split(".")
    # As in the WHATWG URL standard: a host whose last label is a number is an IPv4
    # address or invalid, never a name to look up.
    if not _NUMERIC_PART.match(parts[-1]):
        return None
    value = _inet_aton(parts)
    if value is None:
        return f"{host!r} is not a valid IPv4 address"
    return ipaddress.IPv4Address(value)


def _inet_aton(parts: list[str]) -> int | None:
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    numbers = []
    for part in parts:
        if part.startswith("0x"):
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if not set(part) <= set("01234567"):
                return None
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for i, n in enumerate(leading):
        value += n << (8 * (3 - i))
    return value


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, where it stands for one."""
    if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d, what dual-stack sockets use
        return address.ipv4_mapped
    if address.sixtofour is not None:  # 2002:aabb:ccdd::/48, 6to4
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _address_problem(
    address: IPAddress,
    allow_loopback: bool,
    private: PrivateTargets = NO_PRIVATE_TARGETS,
    host: str | None = None,
) -> str | None:
    """The class that makes ``address`` refused (``"a private address"``), or ``None``.

    ``private`` admits what it lists (an address in a listed network; any address of a
    listed ``host``) unless the address is of a class never admitted."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # Judged as the IPv4 address it stands for, against the list too.
            return _address_problem(embedded, allow_loopback, private, host)
    if address.is_loopback:
        return None if allow_loopback else "a loopback address" + _LOOPBACK_HINT
    if address.is_unspecified:
        return "an unspecified address"
    label = next((label for net, label in _RANGES if address in net), None)
    if label is None and (
        address.is_private
        or address.is_reserved
        or address.is_multicast
        or address.is_link_local
        or not address.is_global
    ):
        label = "a non-public address"
    if label is None:
        return None
    if address in _METADATA_ADDRESSES:
        return label + " (a cloud metadata service)"
    if any(address in net for net, _ in _NEVER_LISTED if net.version == address.version):
        return label
    if private.admits(address, host):
        return None
    return label + _PRIVATE_HINT


def _shown(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return f"{address} (IPv4 {embedded})"
    return str(address)
