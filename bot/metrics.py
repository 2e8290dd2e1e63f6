"""Prometheus metrics (served at the HTTP API's /metrics). Turns and tool
calls are counted from the event bus as they finish (an increment each);
everything else is read from the services when Prometheus scrapes, so
nothing on the path of a message waits for metrics.

One registry per Arium, not the library's global one: a process may build
several bots (tests do), each with its own figures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.runtime.events import EventBus, TurnFinished
from bot.storage.tool_events import ToolEventRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Turn latency buckets (seconds): instant answers to slow tool rounds.
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
BREAKER_STATES = ("closed", "open", "half_open")


@dataclass(frozen=True)
class MetricSources:
    """What the scrape-time collector reads; each a cheap, in-memory call."""

    endpoints: Callable[[], list[dict[str, object]]]  # ModelService.health
    reminders: Callable[[], dict[str, object]]  # ReminderScheduler.health
    errors: Callable[[], int]  # errors reported since start
    refusals: Callable[[], dict[str, int]]  # gate name -> messages refused


class Metrics:
    def __init__(self, events: EventBus, sources: MetricSources) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._turns = Counter(
            "arium_turns", "Conversation turns finished, by outcome", ["status"], registry=self.registry
        )
        self._latency = Histogram(
            "arium_turn_seconds", "Message in to answer out", buckets=TURN_BUCKETS, registry=self.registry
        )
        self._tools = Counter(
            "arium_tool_calls", "Tool calls, by tool and outcome", ["tool", "status"], registry=self.registry
        )
        self.registry.register(_StateCollector(sources))
        events.subscribe(TurnFinished, self._on_turn)
        events.subscribe(ToolEventRecord, self._on_tool)

    def _on_turn(self, event: TurnFinished) -> None:
        self._turns.labels(event.status).inc()
        if event.seconds is not None:
            self._latency.observe(event.seconds)

    def _on_tool(self, event: ToolEventRecord) -> None:
        self._tools.labels(event.tool, event.status).inc()

    def render(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, sources: MetricSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._endpoints()
        yield from self._reminders()
        errors = CounterMetricFamily("arium_errors", "Errors reported to the error handler since start")
        errors.add_metric([], self._sources.errors())
        yield errors
        refused = CounterMetricFamily("arium_gate_refusals", "Messages refused, by gate", labels=["gate"])
        for gate, count in sorted(self._sources.refusals().items()):
            refused.add_metric([gate], count)
        yield refused

    def _endpoints(self) -> Iterator[Metric]:
        breaker = GaugeMetricFamily(
            "arium_model_breaker_state", "1 for the state each model endpoint's circuit breaker is in",
            labels=["tier", "endpoint", "state"],
        )
        in_flight = GaugeMetricFamily(
            "arium_model_in_flight", "Requests in flight per model endpoint", labels=["tier", "endpoint"]
        )
        for endpoint in self._sources.endpoints():
            tier, name = str(endpoint.get("tier", "")), str(endpoint.get("endpoint", ""))
            for state in BREAKER_STATES:
                breaker.add_metric([tier, name, state], 1.0 if endpoint.get("breaker") == state else 0.0)
            in_flight.add_metric([tier, name], float(endpoint.get("in_flight", 0) or 0))  # type: ignore[arg-type]
        yield breaker
        yield in_flight

    def _reminders(self) -> Iterator[Metric]:
        health = self._sources.reminders()
        for name, help_text in (
            ("delivered", "Reminders delivered since start"),
            ("failed", "Reminder firings given up since start"),
            ("blocked", "Reminder deliveries refused by a chat that blocked the bot"),
        ):
            family = CounterMetricFamily(f"arium_reminders_{name}", help_text)
            family.add_metric([], float(health.get(name, 0) or 0))  # type: ignore[arg-type]
            yield family
        armed = GaugeMetricFamily("arium_reminders_due_soon", "Reminders with a timer armed (due within the horizon)")
        armed.add_metric([], float(health.get("armed", 0) or 0))  # type: ignore[arg-type]
        yield armed
        late = GaugeMetricFamily("arium_reminders_late_p99_seconds", "How late deliveries were, 99th percentile")
        late.add_metric([], float(health.get("lateness_p99_s") or 0.0))  # type: ignore[arg-type]
        yield late
