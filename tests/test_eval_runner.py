"""The evaluation runner against the fake model server: verdicts, overlap
under --concurrency, A/B variants, time limits and the tool-call cap, eval
users kept out of /stats, /users and broadcasts, and the command line."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import yaml
from sqlalchemy import func, select

from bot.admin.stats import AdminStats, UserDirectory
from bot.eval.runner import EvalRunner, Variant
from bot.eval.suite import Suite
from bot.storage.broadcasts import BroadcastRepository
from bot.storage.evals import EvalRepository
from bot.storage.repositories import UserProfile
from bot.storage.models import EVAL_USER_MIN, User
from tests.conftest import HeadlessStarter
from tests.fakes.model_server import FakeModelServer, Reply, Request, Step, ToolCallSpec
from tests.support.processes import REPO, clean_env



def scripted(request: Request) -> Step:
    """A deterministic assistant: a few phrases it knows, tools when asked."""
    last = request.messages[-1] if request.messages else {}
    asked = request.last_user_text.lower()
    if "loop" in asked:  # never satisfied: a tool call every round
        return Reply(tool_calls=[ToolCallSpec("calculate", {"expression": f"{len(request.messages)} + 1"})])
    if last.get("role") == "tool":
        return Reply(text=f"Done: {last.get('content')}")
    if "12 * 7" in asked:
        return Reply(tool_calls=[ToolCallSpec("calculate", {"expression": "12 * 7"})])
    if "slow" in asked:
        return Reply(text="eventually", delay=5.0)
    if "hello" in asked:
        return Reply(text="Hello! How can I help?", delay=0.2)
    return Reply(text=f"I heard: {request.last_user_text}", delay=0.2)


SUITE = {
    "name": "unit",
    "time_limits": {"slow": 1.0},
    "tasks": [
        {"id": "greet", "category": "chat", "turns": ["hello"], "expect": {"contains": ["hello"], "no_tools": True}},
        {"id": "greet-wrong", "category": "chat", "turns": ["hello"], "expect": {"contains": ["goodbye"]}},
        {
            "id": "math", "category": "tools", "turns": ["what is 12 * 7?"],
            "expect": {"tool": "calculate", "tool_args": {"calculate": ["12 * 7"]}, "contains": ["84"]},
        },
        {"id": "math-missed", "category": "tools", "turns": ["hello"], "expect": {"tool": "calculate"}},
        {"id": "two-turns", "category": "chat", "turns": ["hello", "/new", "ping"], "expect": {"regex": "heard: p.ng"}},
        {"id": "slow", "category": "slow", "turns": ["be slow"], "expect": {"contains": ["eventually"]}},
        {"id": "loop", "category": "tools", "max_tool_calls": 2, "turns": ["loop forever"], "expect": {"tool": "calculate"}},
    ],
}


Starter = HeadlessStarter


async def test_a_suite_gives_the_right_verdicts_and_stores_them(
    headless: Starter, model: FakeModelServer
) -> None:
    model.responder = scripted
    app = await headless()
    runner = EvalRunner(EvalRepository(app.db), [Variant.of("A", app, "fake chain")], concurrency=4)
    run_id = await runner.run(Suite.model_validate(SUITE), name="first")
    record = await EvalRepository(app.db).run(run_id)
    assert record is not None and record.status == "finished" and record.name == "first"
    verdicts = {r.task_id: r.passed for r in record.results}
    assert verdicts == {
        "greet": True, "greet-wrong": False, "math": True, "math-missed": False,
        "two-turns": True, "slow": False, "loop": False,
    }
    by_id = {r.task_id: r for r in record.results}
    assert by_id["math"].tools == ("calculate",) and by_id["math"].tokens_in > 0 and by_id["math"].model
    assert by_id["slow"].error == "timed out after 1 s"
    assert by_id["loop"].error == "more than 2 tool calls"
    assert [c.check for c in by_id["greet-wrong"].checks if not c.passed] == ["contains: goodbye"]
    assert by_id["two-turns"].transcript == (("hello", "Hello! How can I help?"), ("ping", "I heard: ping"))
    assert by_id["greet"].first_token_ms is not None and by_id["greet"].total_ms >= by_id["greet"].first_token_ms


async def test_concurrency_really_overlaps_tasks(headless: Starter, model: FakeModelServer) -> None:
    model.responder = scripted
    app = await headless()
    suite = Suite.model_validate(
        {"name": "wide", "tasks": [
            {"id": f"t{i}", "turns": ["hello"], "expect": {"contains": ["hello"]}} for i in range(6)
        ]}
    )
    await EvalRunner(EvalRepository(app.db), [Variant.of("A", app, "fake")], concurrency=3).run(suite)
    assert model.max_in_flight >= 2
    model.max_in_flight = 0
    await EvalRunner(EvalRepository(app.db), [Variant.of("A", app, "fake")], concurrency=1).run(suite)
    assert model.max_in_flight == 1


async def test_a_b_runs_store_both_variants(headless: Starter, model: FakeModelServer) -> None:
    model.responder = scripted
    a = await headless(bot_models="openai:gpt-4o-mini")
    b = await headless(bot_models="mistral:mistral-small-latest", model_prices={"mistral:mistral-small-latest": (1.0, 2.0)})
    suite = Suite.model_validate({"name": "ab", "tasks": SUITE["tasks"][:3]})
    run_id = await EvalRunner(EvalRepository(a.db), [Variant.of("A", a, "openai"), Variant.of("B", b, "mistral")]).run(suite)
    record = await EvalRepository(a.db).run(run_id)
    assert record is not None and record.variants == {"A": "openai", "B": "mistral"}
    assert sorted((r.variant, r.task_id) for r in record.results) == sorted(
        (v, t["id"]) for v in "AB" for t in SUITE["tasks"][:3]
    )
    assert all(r.cost is None for r in record.results if r.variant == "A")  # no price for it
    assert all(r.cost is not None and r.cost > 0 for r in record.results if r.variant == "B")
    assert {r.model.split("/")[-1] for r in record.results if r.variant == "B" and r.model} == {"mistral:mistral-small-latest"}


async def test_eval_users_stay_out_of_stats_user_lists_and_broadcasts(
    headless: Starter, model: FakeModelServer
) -> None:
    model.responder = scripted
    app = await headless()
    ann = await app.users.touch(UserProfile(42, "Ann"), "user")
    async with app.db.session() as s:  # a leftover eval user, as a crashed run would leave
        s.add(User(id=EVAL_USER_MIN + 5, first_name="Eval"))
    suite = Suite.model_validate({"name": "quiet", "tasks": SUITE["tasks"][:3]})
    await EvalRunner(EvalRepository(app.db), [Variant.of("A", app, "fake")]).run(suite)
    stats = AdminStats(
        app.db, usage=app.usage, tool_events=app.tool_event_store, reminders=app.reminder_store,
        models=app.models, prices={},
    )
    assert (await stats.user_counts(date.today())).total == 1
    assert [row.id for row in (await UserDirectory(app.db).page("", 0)).rows] == [ann.id]
    assert await BroadcastRepository(app.db).audience_size() == 1
    await app.usage_writer.flush()
    await app.tool_events.flush()
    assert await app.usage.per_day(date.today() - timedelta(days=1)) == []  # no usage counted
    assert await app.tool_event_store.summary(datetime.now(timezone.utc) - timedelta(hours=1)) == []
    async with app.db.reading() as s:
        left = await s.scalar(select(func.count()).select_from(User).where(User.id >= EVAL_USER_MIN))
    assert left == 1  # only the leftover: each task's user is erased when its task ends


async def eval_cli(tmp_path: Path, model: FakeModelServer, *args: str) -> tuple[int, str, str]:
    """``python -m bot eval ...`` in a fresh process against the fake model server."""
    env = clean_env(
        tmp_path, PYTHONPATH=str(REPO), BOT_MODELS="openai:gpt-4o-mini", OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=model.openai_base_url, HF_HUB_OFFLINE="1",
        # Embeddings from the fake server too: a fresh process would otherwise
        # spend seconds loading (or first exporting) the local model.
        EMBEDDING_MODEL="openai:text-embedding-3-small",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "eval", *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_command_line_runs_exports_and_fails_on_a_regression(
    tmp_path: Path, model: FakeModelServer
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "cli", "tasks": SUITE["tasks"][:4]}))
    model.responder = scripted
    code, out, err = await eval_cli(tmp_path, model, "run", str(suite), "--concurrency", "2", "--name", "base")
    assert code == 0, err
    base = out.strip().splitlines()[-1]
    assert "2/4 passed" in out and "failed greet-wrong: contains: goodbye" in out
    exported = tmp_path / "base.json"
    code, out, err = await eval_cli(tmp_path, model, "export", base, "--format", "json", "--out", str(exported))
    assert code == 0, err
    rows = json.loads(exported.read_text())
    assert sorted((r["task_id"], r["variant"], r["passed"]) for r in rows) == [
        ("greet", "A", True), ("greet-wrong", "A", False), ("math", "A", True), ("math-missed", "A", False),
    ]
    worse = await store_worse_run(tmp_path / "data" / "arium.db", base)
    code, out, err = await eval_cli(tmp_path, model, "compare", base, worse)
    assert code == 1, out + err  # success fell from 50% to 0%
    assert "❌" in out
    code, out, err = await eval_cli(tmp_path, model, "compare", base, base)
    assert code == 0, out + err
    code, out, err = await eval_cli(tmp_path, model, "export", "nosuchrun", "--format", "csv", "--out", str(tmp_path / "x.csv"))
    assert code == 2 and "no evaluation run 'nosuchrun'" in err and "Traceback" not in err


async def store_worse_run(database: Path, base: str) -> str:
    """The base run again with every task failed: a worse assistant, written
    straight into the database (a second `eval run` would only cost time)."""
    from dataclasses import replace

    from bot.storage.db import Database

    db = Database(f"sqlite+aiosqlite:///{database}")
    try:
        evals = EvalRepository(db)
        record = await evals.run(base)
        assert record is not None
        await evals.start_run("worse", record.suite, "worse", record.variants, len(record.results), 1)
        for result in record.results:
            await evals.add_result("worse", replace(result, passed=False))
        await evals.finish_run("worse")
    finally:
        await db.dispose()
    return "worse"


async def test_a_suite_with_a_mistake_is_refused_in_one_line(tmp_path: Path, model: FakeModelServer) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntasks:\n  - id: a\n    turns: [hi]\n    expect: {regex: '('}\n")
    code, out, err = await eval_cli(tmp_path, model, "run", str(broken))
    assert code == 2 and "task 'a' expect.regex" in err and "Traceback" not in err
    assert model.chat_requests() == []
