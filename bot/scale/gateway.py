"""The scaled mode's gateway (``python -m bot gateway``): receives
Telegram's webhooks and publishes each update to RabbitMQ, answering
Telegram 200 only after the broker confirmed it. While the broker is down
it answers 503, so Telegram delivers the update again later: nothing is
lost. A wrong or missing secret gets 401 and nothing is published. The
gateway keeps no state and needs no database: run one or several behind a
load balancer."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any
from urllib.parse import urlsplit

from bot.channels.api.channel import HttpChannel
from bot.channels.api.webhook import add_metrics_route, add_webhook_route, webhook_app
from bot.errors import ConfigError, UpdateNotAccepted
from bot.runtime.tasks import TaskTracker
from bot.scale.broker import BrokerUnavailable, Topology, UpdatePublisher
from bot.settings import Settings

log = logging.getLogger(__name__)


class GatewayMetrics:
    """The gateway's /metrics (Prometheus): updates by outcome, and how long
    the broker took to confirm one (the scaled mode's added latency, at its source)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.updates = Counter(
            "arium_gateway_updates", "Webhook updates, published or refused (503)", ["outcome"],
            registry=self.registry,
        )
        self.updates.labels("published")
        self.updates.labels("refused")
        self.confirm = Histogram(
            "arium_gateway_confirm_seconds", "Publish to broker confirm",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1), registry=self.registry,
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def check_gateway_settings(settings: Settings) -> None:
    missing = [
        name
        for name, value in (
            ("WEBHOOK_URL", settings.webhook_url),
            ("WEBHOOK_SECRET", settings.webhook_secret),
            ("BROKER_URL", settings.broker_url),
            ("TELEGRAM_BOT_TOKEN", settings.telegram_bot_token),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"the gateway needs {', '.join(missing)}")


class Gateway:
    def __init__(self, settings: Settings, tasks: TaskTracker) -> None:
        check_gateway_settings(settings)
        assert settings.broker_url and settings.webhook_secret and settings.webhook_url
        self._settings = settings
        self.topology = Topology(settings.broker_prefix, settings.broker_partitions)
        self.publisher = UpdatePublisher(settings.broker_url.get_secret_value(), self.topology)
        app = webhook_app()
        path = urlsplit(settings.webhook_url).path or "/"
        add_webhook_route(app, path, secret=settings.webhook_secret.get_secret_value(), accept=self._accept)
        self.metrics = GatewayMetrics()
        add_metrics_route(app, self.metrics.render)
        self.http = HttpChannel(app, host=settings.api_host, port=settings.api_port, tasks=tasks)

        self.published = 0
        self.refused = 0

    async def _accept(self, update: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            await self.publisher.publish(update)
        except BrokerUnavailable as exc:
            self.refused += 1
            self.metrics.updates.labels("refused").inc()
            raise UpdateNotAccepted(f"the broker did not confirm: {exc}") from exc
        self.published += 1
        self.metrics.updates.labels("published").inc()
        self.metrics.confirm.observe(time.perf_counter() - started)

    async def start(self) -> None:
        from bot.channels.telegram.webhook import register_webhook

        await self.publisher.start()
        await self.http.start()
        await self.http.start_receiving()
        settings = self._settings
        assert settings.telegram_bot_token and settings.webhook_url and settings.webhook_secret
        await register_webhook(
            settings.telegram_bot_token.get_secret_value(),
            settings.telegram_api_url,
            settings.webhook_url,
            settings.webhook_secret.get_secret_value(),
        )
        log.info("gateway: publishing updates to %s in %d partitions", self.topology.exchange, self.topology.partitions)

    async def stop(self, timeout: float = 10.0) -> None:
        await self.http.stop(timeout)
        await self.publisher.close()


async def run_gateway(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    tasks = TaskTracker()
    gateway = Gateway(settings, tasks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        log.info("gateway stopped: %d updates published, %d refused while the broker was down",
                 gateway.published, gateway.refused)
