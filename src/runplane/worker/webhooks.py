"""Webhook delivery: the SSRF guard, and the dispatcher that drains the durable outbox.

The outbox row is written by the store in the transaction that makes the run terminal, so a
delivery survives `kill -9` between the status write and the POST. The dispatcher runs beside the
workers (never inside a run's task): it claims due deliveries under a lease, POSTs them, and on
failure schedules the next attempt with exponential backoff and jitter, up to `max_attempts`;
a delivery whose process died mid-POST is claimed again when its lease ends. Delivery is therefore
at least once: receivers deduplicate by the `X-Runplane-Delivery` header.

Each POST carries `X-Runplane-Timestamp` and, when a secret is configured, `X-Runplane-Signature`
(`v1=` HMAC-SHA256 of `"<timestamp>." + body`, see `core.webhooks.verify`).

Refused permanently (no retry): URLs the guard refuses (also after a redirect, which is followed
by hand so that each hop is checked), and 4xx answers other than 408 and 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import socket
import time
from datetime import timedelta
from urllib.parse import urljoin, urlsplit

import httpx

from runplane.core.errors import InvalidInput
from runplane.core.lifecycle import webhook_retry_delay
from runplane.core.manager import RunManager
from runplane.core.models import WebhookDelivery
from runplane.core.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOKS_CHANNEL,
    AddressPolicy,
    sign,
)
from runplane.worker.wakeups import run_woken, seconds_until

logger = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRYABLE_4XX = frozenset({408, 425, 429})


class WebhookGuard:
    """`core.webhooks.UrlGuard`: absolute http(s) URLs whose host resolves only to addresses the
    policy allows (public ones, and what `RUNPLANE_WEBHOOK_ALLOW_HOSTS` adds)."""

    def __init__(self, policy: AddressPolicy | None = None) -> None:
        self.policy = policy or AddressPolicy()

    async def check(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme.lower() not in ("http", "https") or not host:
            raise InvalidInput(f"Webhook must be an absolute http(s) URL, got {url[:200]!r}")
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise InvalidInput(f"Invalid webhook port in {url[:200]!r}") from None
        reason = self.policy.refusal(host, await _resolve(host, port))
        if reason is not None:
            raise InvalidInput(f"Webhook host blocked: {reason}")


async def _resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


class _Permanent(Exception):
    """A delivery that must not be retried."""


class WebhookDispatcher:
    """Drains the webhook outbox.

    Args:
        manager: the run manager (the outbox is reached through it).
        guard: checks each URL (and redirect) before it is called.
        secret: HMAC key of `X-Runplane-Signature`; None sends no signature.
        max_attempts: attempts before a delivery is marked `failed` for good.
        base_delay, max_delay: the backoff (seconds) before the 2nd attempt, and its cap.
        timeout: seconds one POST may take.
        concurrency: POSTs in flight at once.
        max_sleep: longest sleep without a hint (deliveries of other processes are found then).
    """

    def __init__(
        self,
        manager: RunManager,
        guard: WebhookGuard,
        *,
        secret: str | None = None,
        max_attempts: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        timeout: float = 10.0,
        concurrency: int = 16,
        max_redirects: int = 3,
        max_sleep: float = 30.0,
    ) -> None:
        self.manager = manager
        self.guard = guard
        self.secret = secret
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.max_sleep = max_sleep
        self.delivered = self.retried = self.failed = 0
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return (
            f"<WebhookDispatcher delivered={self.delivered} retried={self.retried} "
            f"failed={self.failed} inflight={len(self._inflight)}>"
        )

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start in the background; returns once it listens for finished runs."""
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)
        listening = asyncio.Event()
        self._task = asyncio.create_task(self._loop(listening), name="runplane-webhooks")
        await listening.wait()

    async def stop(self) -> None:
        """Stop claiming; deliveries in flight are cancelled (their lease makes them due again)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for inflight in list(self._inflight):
            inflight.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run_until_idle(self) -> None:
        """Burst mode (tests, scripts): deliver everything due now, one attempt each."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)
        while await self._dispatch_due():
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await asyncio.gather(*self._inflight, return_exceptions=True)

    # -- the loop ---------------------------------------------------------------------------------

    async def _loop(self, listening: asyncio.Event) -> None:
        await run_woken(
            self.manager,
            WEBHOOKS_CHANNEL,
            listening=listening,
            wake=self._wake,
            step=self._dispatch_due,
            sleep_seconds=self._sleep_seconds,
        )

    async def _sleep_seconds(self) -> float:
        return await seconds_until(
            self.manager.next_webhook_due,
            self.manager.clock,
            self.max_sleep,
            failure="reading the webhook outbox failed",
            action="webhook",
        )

    async def _dispatch_due(self) -> bool:
        """Claim what is due (as many as there are free slots) and start POSTing; False when
        nothing was due."""
        free = self._concurrency - len(self._inflight)
        if free <= 0:
            await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
            return True
        try:
            deliveries = await self.manager.claim_webhooks(limit=free)
        except Exception:
            logger.exception("claiming webhooks failed", extra={"action": "webhook"})
            return False
        for delivery in deliveries:
            task = asyncio.create_task(self._deliver(delivery), name=f"runplane-webhook-{delivery.run_id}")
            self._inflight.add(task)
            task.add_done_callback(self._settled)
        return bool(deliveries)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        # A retry may now be due before the sleep the loop chose (it saw this one as claimed).
        self._wake.set()

    # -- one delivery -----------------------------------------------------------------------------

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        extra = {"action": "webhook", "run_id": delivery.run_id, "attempt": delivery.attempts}
        try:
            status = await self._post(delivery)
        except _Permanent as exc:
            await self._give_up(delivery, str(exc), extra)
            return
        except (httpx.HTTPError, OSError, InvalidInput) as exc:
            await self._retry_or_give_up(delivery, f"{type(exc).__name__}: {exc}", extra)
            return
        except Exception as exc:  # never let one delivery kill the dispatcher
            logger.exception("webhook delivery crashed", extra=extra)
            await self._retry_or_give_up(delivery, f"{type(exc).__name__}: {exc}", extra)
            return
        if 200 <= status < 300:
            await self.manager.webhook_delivered(delivery)
            self.delivered += 1
            logger.info(
                "webhook for run %s delivered to %s (attempt %d, HTTP %d)",
                delivery.run_id,
                _shown(delivery.url),
                delivery.attempts,
                status,
                extra=extra,
            )
        elif 400 <= status < 500 and status not in _RETRYABLE_4XX:
            await self._give_up(delivery, f"HTTP {status}", extra)
        else:
            await self._retry_or_give_up(delivery, f"HTTP {status}", extra)

    async def _post(self, delivery: WebhookDelivery) -> int:
        assert self._client is not None
        sent_at = self.manager.clock.now().isoformat()
        body = json.dumps({**delivery.payload, "webhook_sent_at": sent_at}, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "runplane-webhook",
            DELIVERY_HEADER: delivery.delivery_id,
            TIMESTAMP_HEADER: timestamp,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        url = delivery.url
        for _ in range(self.max_redirects + 1):
            try:
                await self.guard.check(url)
            except InvalidInput as exc:
                raise _Permanent(exc.message) from None
            response = await self._client.post(url, content=body, headers=headers)
            await response.aclose()
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                return response.status_code
            url = urljoin(url, location)  # the next hop is checked before it is called
        raise _Permanent(f"more than {self.max_redirects} redirects")

    async def _retry_or_give_up(
        self, delivery: WebhookDelivery, error: str, extra: dict[str, object]
    ) -> None:
        if delivery.attempts >= self.max_attempts:
            await self._give_up(delivery, error, extra)
            return
        delay = webhook_retry_delay(
            delivery.attempts, base=self.base_delay, cap=self.max_delay, jitter=random.random()
        )
        await self.manager.webhook_failed(
            delivery, error, self.manager.clock.now() + timedelta(seconds=delay)
        )
        self.retried += 1
        logger.warning(
            "webhook for run %s to %s failed (attempt %d of %d: %s); retrying in %.1f s",
            delivery.run_id,
            _shown(delivery.url),
            delivery.attempts,
            self.max_attempts,
            error,
            delay,
            extra=extra,
        )

    async def _give_up(self, delivery: WebhookDelivery, error: str, extra: dict[str, object]) -> None:
        await self.manager.webhook_failed(delivery, error, None)
        self.failed += 1
        logger.error(
            "webhook for run %s to %s failed for good after %d attempt(s): %s",
            delivery.run_id,
            _shown(delivery.url),
            delivery.attempts,
            error,
            extra=extra,
        )


def _shown(url: str) -> str:
    """The URL for logs: without its query string and credentials (they may hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
