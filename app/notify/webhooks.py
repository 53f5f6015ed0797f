"""Webhook signatures (Standard Webhooks) and the check that keeps a user's webhook_url off our own network.

Stdlib only, and free of FastAPI, torch and worker code, so the API can vet a URL when it is saved and the
workers can sign and re-check it when they deliver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
USER_AGENT = "Lookalike-Webhooks/1"
ALLOW_PRIVATE_HINT = "(or set LOOKALIKE_WEBHOOK_ALLOW_PRIVATE_TARGETS=true on a private network)"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
METADATA_KIND = "a cloud metadata address"
# No allow-private setting lifts this one, so the advice does not mention it.
METADATA_ADVICE = "webhooks are never sent to cloud metadata services, so use your receiver's own address"
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
DEFAULT_PORTS = {"http": 80, "https": 443}


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """What a receiver does: a fresh timestamp and at least one matching `v1,` signature."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(candidate.encode(), expected)
        for candidate in signatures.split(" ")
        if candidate.startswith("v1,")
    )


class TargetRefused(ValueError):
    """A webhook_url we will not deliver to; `reason` is a sentence to show the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Resolver = Callable[..., list[tuple[Any, ...]]]


def check_target(
    url: str,
    *,
    allow_private: bool,
    resolve: Resolver = socket.getaddrinfo,
    label: str = "webhook_url",
    allow_hint: str | None = None,
) -> list[str]:
    """Refuse URLs that would reach this host, its private network or a cloud metadata service.

    Every resolved address must be public, since a client may connect to any of them. `allow_private` lets
    loopback and private addresses through, never a cloud metadata service. Returns the addresses, for the
    client to connect to without resolving the host again (which DNS rebinding could answer differently).
    `label` names the field in the reasons, `allow_hint` the setting that lets private targets through.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetRefused(f"{label} is not a valid URL ({e}); use e.g. https://example.com/hooks") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise TargetRefused(f"{label} must start with http:// or https://, not {scheme or 'nothing'}://")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetRefused(f"{label} has no host name; use e.g. https://example.com/hooks")
    port = port or DEFAULT_PORTS[scheme]

    if host in METADATA_HOSTS:
        raise TargetRefused(f"{label} names {host}, a cloud metadata service; {METADATA_ADVICE}")

    addresses = [host] if _parse_ip(host) is not None else _resolve(host, port, resolve, label)
    for address in addresses:
        ip = _parse_ip(address)
        if ip is not None and _is_metadata(ip):
            raise TargetRefused(f"{label} resolves to {address}, {METADATA_KIND}; {METADATA_ADVICE}")
        kind = None if allow_private else _non_public_kind(ip)
        if kind:
            raise TargetRefused(
                f"{label} resolves to {address}, {kind}; use a public address {allow_hint or ALLOW_PRIVATE_HINT}"
            )
    return addresses


def _resolve(host: str, port: int, resolve: Resolver, label: str) -> list[str]:
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        infos = []
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise TargetRefused(f"{label} host {host} does not resolve; check the spelling and its DNS records")
    return addresses


def _parse_ip(text: str) -> IPAddress | None:
    """The address without any IPv6 zone (`%eth0`), which does not change what kind of address it is."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), which is where packets end up."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if ip.sixtofour:
            return ip.sixtofour
        if ip in NAT64_PREFIX:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _is_metadata(ip: IPAddress) -> bool:
    return ip in METADATA_ADDRESSES or _embedded_ipv4(ip) in METADATA_ADDRESSES


def _non_public_kind(ip: IPAddress | None) -> str | None:
    if ip is None:
        return "not an IP address"
    for candidate in (_embedded_ipv4(ip), ip):
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_unspecified:
            return "an unspecified address"
        if isinstance(candidate, ipaddress.IPv4Address) and candidate in SHARED_ADDRESS_SPACE:
            return "a shared (carrier-grade NAT) address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_multicast:
            return "a multicast address"
        if candidate.is_reserved:
            return "a reserved address"
        if candidate.is_private:
            return "a private address"
        if not candidate.is_global:
            return "not a public address"
    return None
