"""Watching the agents: /stats lines them up side by side with a chart
(against the fake Bot API), and the evaluation harness measures routing
(``expect.agent``, the agent stored per result, turns per agent and routing
accuracy in the run summary and in ``eval compare``)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from bot.admin.agent_chart import AgentChartLabels, render_agents_chart
from bot.admin.agent_stats import AgentLine
from bot.admin.charts import CHART_HEIGHT, CHART_WIDTH
from bot.app import Arium
from bot.channels.telegram.stats_handlers import stats_lines
from bot.eval.cli import summary
from bot.eval.compare import compare, compare_variants, variant_metrics
from bot.eval.runner import MULTI_AGENT_OFF, EvalRunner, Variant
from bot.eval.suite import Expect, Suite
from bot.storage.agents import AgentRepository, AgentTurnRecord
from bot.storage.evals import EvalRepository, TaskOutcome
from bot.storage.models import EVAL_USER_MIN, AgentTurn
from tests.conftest import BotFactory, HeadlessStarter as Starter, eventually
from tests.fakes.model_server import FakeModelServer, Reply, Request, Step
from tests.fakes.telegram_server import FakeTelegram
from tests.support.admin import ADMIN, MINI, MISTRAL, PRICES, command, png_size

# Keyword rules route without asking the classifier, so the fake model only answers turns.
AGENTS: dict[str, Any] = {
    "coder": {"description": "Writes and explains program code.", "keywords": ["python"]},
    "travel": {"description": "Plans trips.", "keywords": ["trip"]},
}
USAGE_CAPTION = "Turns and tokens per day, last 30 days (UTC)"
AGENTS_CAPTION = "Turns and mean latency per agent, last 30 days"


# --- /stats ----------------------------------------------------------------------------


def agent_turn(agent: str, reason: str, model: str | None, latency_ms: int, tokens: tuple[int, int], *,
               status: str = "complete", switched: bool = False, user_id: int = 2001) -> AgentTurnRecord:
    return AgentTurnRecord(
        request_id=f"r-{agent}-{latency_ms}-{user_id}", user_id=user_id, chat_id=user_id, agent=agent, reason=reason,
        switched=switched, status=status, latency_ms=latency_ms, tokens_in=tokens[0], tokens_out=tokens[1], model=model,
    )


SEEDED = [
    agent_turn("coder", "rule", MINI, 1000, (3000, 1500)),
    agent_turn("coder", "rule", MINI, 2000, (3000, 1500), switched=True),
    agent_turn("coder", "classifier", None, 3000, (0, 0), status="failed"),  # no model answered
    agent_turn("travel", "classifier", MISTRAL, 500, (100, 50), switched=True),  # MISTRAL has no price
    # An evaluation's turn, still in the table while its task runs: not counted.
    agent_turn("coder", "rule", MINI, 99_000, (9999, 9999), user_id=EVAL_USER_MIN + 1),
]


async def stats_shown(app: Arium) -> None:
    """The /stats handler has returned (its audit entry is written after every photo went out)."""
    await eventually(lambda: app.audit_log.latest(5), lambda rows: any(r.action == "stats" for r in rows))


async def test_stats_show_the_agents_side_by_side_with_a_chart(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN), model_prices=PRICES, agents=AGENTS, bot_agents_mode="multi")
    await AgentRepository(app.db).add_turns(SEEDED)

    [text] = await command(tg, "/stats")
    await stats_shown(app)
    body = text.text
    assert "Agents, 30 days" in body
    assert (
        "• coder: 3 turns (1 failed) · avg 2.00 s · in 6,000 · out 3,000 · $0.0027 · "
        "routed by keyword 2, classifier 1 · switched to it 1"
    ) in body
    assert "• travel: 1 turns (0 failed) · avg 0.50 s · in 100 · out 50 · — · routed by classifier 1 · switched to it 1" in body
    assert body.index("• coder:") < body.index("• travel:"), "busiest agent first"

    photos = [m for m in tg.messages(ADMIN) if m.photo]
    assert [p.text for p in photos] == [USAGE_CAPTION, AGENTS_CAPTION]
    usage_png, agents_png = (photo.file.data if photo.file else b"" for photo in photos)
    assert png_size(agents_png) == (CHART_WIDTH, CHART_HEIGHT) and agents_png != usage_png
    assert [r.outcome for r in await app.audit_log.latest(5) if r.action == "stats"] == ["stats shown"]

    russian = "\n".join(stats_lines(await app.admin_stats.report(), "ru"))
    assert "<b>Агенты, 30 дней</b>" in russian
    assert "<code>coder</code>: ходов 3 (неудачных 1) · в среднем 2.00 с" in russian
    assert "выбран: ключевое слово 2, классификатор 1 · переключений на него 1" in russian


async def test_stats_without_agent_turns_show_no_agents_section_or_chart(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN), model_prices=PRICES)  # single-agent mode: no [agents]
    assert app.agents is None
    [text] = await command(tg, "/stats")
    await stats_shown(app)
    assert "Agents" not in text.text and "Tool calls, 30 days" in text.text
    assert [m.text for m in tg.messages(ADMIN) if m.photo] == [USAGE_CAPTION]
    assert (await app.admin_stats.report()).agents == ()


def test_the_agents_chart_is_a_png_of_the_usual_size_even_for_zeros() -> None:
    labels = AgentChartLabels("Агенты", "Ходы", "Неудачные", "Задержка, с")
    lines = [AgentLine("coder", 5, 1, 1500.0, 10, 5, None, 0), AgentLine("travel", 2, 0, 0.0, 0, 0, None, 0)]
    assert png_size(render_agents_chart(lines, labels)) == (CHART_WIDTH, CHART_HEIGHT)
    assert png_size(render_agents_chart([AgentLine("idle", 1, 1, 0.0, 0, 0, None, 0)], labels)) == (
        CHART_WIDTH, CHART_HEIGHT
    )


# --- The evaluation harness -------------------------------------------------------------





def echo(request: Request) -> Step:
    return Reply(text=f"On it: {request.last_user_text}")


ROUTING_SUITE = Suite.model_validate({
    "name": "routing",
    "tasks": [
        {"id": "py", "turns": ["how do I sort a list in python?"], "expect": {"agent": "coder"}},
        {"id": "trip-to-coder", "turns": ["plan a trip to Rome"], "expect": {"agent": "coder"}},
        # Only the last turn counts: travel answers first, then the coder.
        {"id": "then-code", "turns": ["plan a trip", "now write it in python"], "expect": {"agent": "Coder"}},
        {"id": "chat", "turns": ["plan a trip to Oslo"], "expect": {"contains": ["Oslo"]}},
    ],
})


async def test_expect_agent_passes_for_the_right_agent_and_routing_is_measured(
    headless: Starter, model: FakeModelServer
) -> None:
    model.responder = echo
    multi = await headless(agents=AGENTS, bot_agents_mode="multi")
    single = await headless()
    evals = EvalRepository(multi.db)
    run_id = await EvalRunner(evals, [Variant.of("A", multi, "agents"), Variant.of("B", single, "no agents")]).run(
        ROUTING_SUITE
    )
    record = await evals.run(run_id)  # read back: the agents survive the database
    assert record is not None
    a = {r.task_id: r for r in record.results if r.variant == "A"}
    b = {r.task_id: r for r in record.results if r.variant == "B"}

    assert {task: r.passed for task, r in a.items()} == {"py": True, "trip-to-coder": False, "then-code": True, "chat": True}
    assert [(c.check, c.detail) for c in a["trip-to-coder"].checks] == [("agent: coder", "answered by: travel")]
    assert a["py"].agent == "coder" and a["trip-to-coder"].agent == "travel"
    assert a["then-code"].agents == ("travel", "coder")
    assert len(model.chat_requests()) == 10, "one request per turn: keyword rules asked no classifier"

    assert {task: r.passed for task, r in b.items()} == {"py": False, "trip-to-coder": False, "then-code": False, "chat": True}
    assert [(c.check, c.passed, c.detail) for c in b["py"].checks] == [("agent: coder", False, MULTI_AGENT_OFF)]
    assert all(r.agents == () and r.agent is None for r in b.values())

    metrics = variant_metrics(record, "A")
    assert metrics.agent_turns == {"travel": 3, "coder": 2}
    assert metrics.routing_accuracy == pytest.approx(2 / 3) and metrics.routed_tasks == 3
    assert variant_metrics(record, "B").routing_accuracy == 0 and variant_metrics(record, "B").agent_turns == {}

    printed = summary(record)
    assert "turns per agent: travel 3, coder 2; accuracy 2/3 (66.7%)" in printed
    assert "turns per agent: no agent recorded; accuracy 0/3 (0%)" in printed
    rows = {row.metric: row for row in compare_variants(record).rows}
    assert (rows["Routing accuracy (3)"].base_text, rows["Routing accuracy (3)"].run_text) == ("66.7%", "0%")
    assert (rows["Turns: coder"].base_text, rows["Turns: coder"].run_text) == ("2 (40%)", "0 (0%)")
    assert rows["Turns: travel"].change_text == "-60 pp"

    async with multi.db.reading() as s:  # written before each task's erase, so erased with it
        left = await s.scalar(select(func.count()).select_from(AgentTurn).where(AgentTurn.user_id >= EVAL_USER_MIN))
    assert left == 0


async def test_single_agent_runs_keep_their_tables_and_stored_transcripts(
    headless: Starter, model: FakeModelServer
) -> None:
    model.responder = echo
    app = await headless()
    suite = Suite.model_validate({"name": "plain", "tasks": [ROUTING_SUITE.tasks[-1].model_dump()]})
    evals = EvalRepository(app.db)
    record = await evals.run(await EvalRunner(evals, [Variant.of("A", app, "plain")]).run(suite))
    assert record is not None and record.results[0].passed and record.results[0].agents == ()
    assert "turns per agent" not in summary(record)
    metrics = [row.metric for row in compare(record, record).rows]
    assert "Errors" in metrics and not [m for m in metrics if m.startswith(("Routing", "Turns:"))]


def test_stored_transcripts_carry_each_turns_agent_only_in_multi_agent_mode() -> None:
    from bot.storage.evals import _outcome, _row

    plain = TaskOutcome("t", "chat", "A", True, (), (("hi", "hello"),), 10)
    routed = TaskOutcome("t", "chat", "A", True, (), (("hi", "hello"), ("py", "code")), 10, agents=(None, "coder"))
    assert _row("r", plain).transcript == '[["hi", "hello"]]'
    assert _row("r", routed).transcript == '[["hi", "hello", null], ["py", "code", "coder"]]'
    assert _outcome(_row("r", routed)).agents == (None, "coder") and _outcome(_row("r", routed)).agent == "coder"
    assert _outcome(_row("r", plain)).agents == () and routed.as_dict()["agent"] == "coder"


def test_expect_agent_is_a_check_of_its_own_with_a_checked_name() -> None:
    assert Expect.model_validate({"agent": " Coder "}).agent == "coder"
    with pytest.raises(ValidationError, match="not an agent name"):
        Expect.model_validate({"agent": "two words"})
