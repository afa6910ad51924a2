"""Webhook rules that need no I/O: which addresses a webhook may reach, and how deliveries are signed.

A receiver verifies a delivery by recomputing `sign(secret, timestamp, body)` over the raw body and
the `X-Runplane-Timestamp` header, comparing it with `X-Runplane-Signature` in constant time, and
refusing timestamps too far from its clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from runplane.core.errors import InvalidInput

SIGNATURE_HEADER = "X-Runplane-Signature"
TIMESTAMP_HEADER = "X-Runplane-Timestamp"
DELIVERY_HEADER = "X-Runplane-Delivery"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud metadata services (AWS, GCP, Azure, OpenStack on link-local; AWS IPv6; Alibaba).
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of "<timestamp>." + body>` under `secret`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether `signature` is `sign(secret, timestamp, body)` (constant-time comparison)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which hosts a webhook may reach. Public addresses always; private, loopback, link-local,
    reserved and cloud-metadata ones only when allowed by name or network."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_loopback: bool = False

    @classmethod
    def parse(cls, spec: str | None, *, allow_loopback: bool = False) -> AddressPolicy:
        """A policy from `RUNPLANE_WEBHOOK_ALLOW_HOSTS`: comma-separated host names, addresses or CIDRs.

        Raises:
            InvalidInput: an entry is empty or a malformed network.
        """
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in (spec or "").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if "/" in entry or " " in entry:
                    raise InvalidInput(
                        f"webhook allow-list entry {raw.strip()!r} is not a host or CIDR"
                    ) from None
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks), allow_loopback)

    def refusal(self, host: str, addresses: Iterable[str]) -> str | None:
        """Why a webhook to `host`, which resolves to `addresses`, is refused; None when allowed."""
        name = host.lower().rstrip(".").strip("[]")
        if name in self.allow_hosts:
            return None
        resolved = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
        if not resolved:
            return f"host {host!r} does not resolve"
        if name in _METADATA_HOSTS:
            return f"host {host!r} is a cloud metadata service"
        for address in resolved:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if any(address in network for network in self.allow_networks):
                continue
            reason = _private_reason(address)
            if reason == "loopback" and self.allow_loopback:
                continue
            if reason is not None:
                return f"host {host!r} resolves to a {reason} address ({address})"
        return None


def _private_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "reserved"
    if address.is_private or not address.is_global:
        return "private"
    return None


class UrlGuard(Protocol):
    """Refuses webhook URLs the server must not call (SSRF). Implemented where DNS is allowed."""

    async def check(self, url: str) -> None:
        """Raise `InvalidInput` when `url` is not an http(s) URL or reaches a refused address."""
        ...


#: Channel on which a run that ended with a webhook wakes dispatchers at once (a hint: they also
#: re-read the outbox on their own).
WEBHOOKS_CHANNEL = "runplane:webhooks"
