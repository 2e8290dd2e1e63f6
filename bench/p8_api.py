"""P8: the HTTP API's chat completion beside the Telegram turn, in one run.

One bot serves both (the fakes in its process, the model answering at once).
Turns alternate: a Telegram message (update injected -> final sendMessage at
the fake Bot API), a chat completion through the API without streaming, and
one streamed (request sent -> `data: [DONE]`). Then 200 streamed completions
at once: all must be served, none dropped.

    .venv/bin/python -m bench.p8_api [--turns 150] [--provider openai|mistral]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from datetime import date

import httpx

from bench.harness import Row, ms, percentile, running_bot, until_idle, verdict
from bot.storage.repositories import UserProfile
from tests.fakes.model_server import Reply, Request

CHAT = 8001
RATIO_BUDGET = 1.3
CONCURRENT = 200
QUESTION = "Which train should I take tomorrow morning to be in the old town before nine?"
ANSWER = "Take the 7:40: it is faster door to door than the plane once you count the transfers."


def instant_reply(request: Request) -> Reply:
    return Reply(text=ANSWER)


async def telegram_turn(rig, expected: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    rig.tg.user_text(QUESTION, chat_id=CHAT, user_id=CHAT)
    await rig.tg.wait_messages(CHAT, expected)
    elapsed = time.perf_counter() - started
    await until_idle(rig.app)
    return elapsed


async def api_turn(client: httpx.AsyncClient, *, stream: bool) -> float:
    body = {"model": "arium", "stream": stream, "messages": [{"role": "user", "content": QUESTION}]}
    started = time.perf_counter()
    if not stream:
        response = await client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        return time.perf_counter() - started
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                return time.perf_counter() - started
    raise RuntimeError("a stream ended without [DONE]")


async def streamed_to_the_end(client: httpx.AsyncClient) -> bool:
    try:
        await api_turn(client, stream=True)
        return True
    except (httpx.HTTPError, RuntimeError):
        return False


async def run_p8(provider: str, turns: int) -> list[Row]:
    # The API user sends hundreds of requests a minute here: no per-user rate limit.
    async with running_bot(provider, api_enabled=True, api_port=0, bot_rate_per_minute=0) as rig:
        assert rig.tg is not None and rig.model is not None and rig.app.api is not None
        rig.model.responder = instant_reply
        await rig.app.users.touch(UserProfile(CHAT, "Bench"), "user")
        _, key = await rig.app.api_keys.create("bench", CHAT)
        limits = httpx.Limits(max_connections=CONCURRENT + 10, max_keepalive_connections=CONCURRENT + 10)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{rig.app.api.port}", headers={"Authorization": f"Bearer {key}"},
            timeout=60, limits=limits,
        ) as client:
            samples: dict[str, list[float]] = {"telegram": [], "api": [], "api stream": []}
            sent = 0
            for i in range(turns + 10):  # the first 10 rounds warm up and are not kept
                sent += 1
                tg = await telegram_turn(rig, sent)
                whole = await api_turn(client, stream=False)
                streamed = await api_turn(client, stream=True)
                if i >= 10:
                    samples["telegram"].append(tg)
                    samples["api"].append(whole)
                    samples["api stream"].append(streamed)
            burst_started = time.perf_counter()
            served = await asyncio.gather(*(streamed_to_the_end(client) for _ in range(CONCURRENT)))
            burst = time.perf_counter() - burst_started
    rows = []
    base = percentile(samples["telegram"], 50)
    for name, values in samples.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        ratio = p50 / base
        budget = "-" if name == "telegram" else f"p50 <= {RATIO_BUDGET}x telegram"
        result = "info" if name == "telegram" else verdict(ratio <= RATIO_BUDGET)
        rows.append(Row("P8", provider, f"{name} turn (n={len(values)})", f"p50 {ms(p50)} ({ratio:.2f}x), p99 {ms(p99)}", budget, result))
    ok = sum(served)
    rows.append(
        Row("P8", provider, f"{CONCURRENT} streamed at once", f"{ok}/{CONCURRENT} served in {burst:.2f} s", "all served", verdict(ok == CONCURRENT))
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p8_api", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=150, help="measured rounds (default 150)")
    parser.add_argument("--provider", choices=("openai", "mistral"), default="openai")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = asyncio.run(run_p8(args.provider, args.turns))
    print(f"P8 on {date.today()}: model instant, fakes in the bot's process, turns interleaved")
    print("| bench | provider | measure | value | budget | result |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.bench} | {row.provider} | {row.measure} | {row.value} | {row.budget} | {row.result} |")
    return 0 if all(row.result != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
