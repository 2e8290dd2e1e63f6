"""The evaluation results page as HTML: the list of runs, one run (summary
per variant, success by category, every task with its checks and
transcript, live progress while it runs) and two runs side by side.

Plain server-rendered HTML with a little inline CSS and one inline script;
nothing is loaded from elsewhere. Everything that comes from the database
(suite and task names, transcripts, check details, errors) is escaped: a
transcript is whatever a model said, and a model can be talked into saying
``<script>``. The script carries the response's CSP nonce, so even a slip
in escaping would not run injected code. The web framework lives in
bot/channels/api/eval_pages.py; this module only turns records into text."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import quote, urlencode

from bot.eval.chart import VARIANT_COLORS, success_by_category_svg
from bot.eval.compare import Comparison, Verdict
from bot.storage.eval_views import PassCount
from bot.storage.evals import RunRecord, TaskOutcome


@dataclass(frozen=True)
class Page:
    """What every page needs besides its records: the nonce its script runs
    under, and the path prefix the browser sees (a proxy may serve the API
    under a sub-path)."""

    nonce: str
    prefix: str = ""

    def url(self, path: str, **query: str | int) -> str:
        """An escaped href for ``path`` (which starts with /)."""
        link = self.prefix + path
        if query:
            link += "?" + urlencode(query)
        return escape(link)

    def run_url(self, run_id: str, tail: str = "") -> str:
        return self.url(f"/eval/runs/{quote(run_id, safe='')}{tail}")


def text(value: object) -> str:
    """Any value as HTML text, escaped (quotes too: values also go into attributes)."""
    return escape(str(value), quote=True)


# --- the list of runs --------------------------------------------------------------


def runs_page(page: Page, runs: Sequence[RunRecord], counts: dict[str, dict[str, PassCount]]) -> str:
    if not runs:
        body = "<p>No evaluation runs yet. Start one with <code>python -m bot eval run SUITE.yaml</code>.</p>"
        return _layout(page, "Evaluation runs", body)
    rows = "".join(_run_row(page, run, counts.get(run.id, {})) for run in runs)
    body = (
        '<table class="runs"><thead><tr><th>Run</th><th>Suite</th><th>Name</th><th>Started</th>'
        "<th>Status</th><th>Variants</th><th>Pass rate</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{_compare_form(page, runs)}"
    )
    return _layout(page, "Evaluation runs", body)


def _run_row(page: Page, run: RunRecord, counts: dict[str, PassCount]) -> str:
    variants = "<br>".join(f"<b>{text(v)}</b> {text(described)}" for v, described in sorted(run.variants.items()))
    rates = "<br>".join(_rate_cell(v, counts[v]) for v in sorted(counts)) or "—"
    return (
        f'<tr data-run="{text(run.id)}"><td><a href="{page.run_url(run.id)}">{text(run.id)}</a></td>'
        f"<td>{text(run.suite)}</td><td>{text(run.name or '')}</td><td>{_when(run.started_at)}</td>"
        f"<td>{_status(run.status)}</td><td>{variants}</td><td>{rates}</td></tr>"
    )


def _rate_cell(variant: str, count: PassCount) -> str:
    rate = f"{count.rate:.0%}" if count.rate is not None else "—"
    return f"<b>{text(variant)}</b> {rate} ({count.passed}/{count.done})"


def _compare_form(page: Page, runs: Sequence[RunRecord]) -> str:
    """Two pickers, the newest run against the one before it: a plain GET
    form, so comparing needs no script."""
    if len(runs) < 2:
        return ""
    return (
        f'<form class="compare" method="get" action="{page.url("/eval/compare")}"><h2>Compare two runs</h2>'
        f'<label>Base <select name="base">{_run_options(runs, runs[1].id)}</select></label> '
        f'<label>Run <select name="run">{_run_options(runs, runs[0].id)}</select></label> '
        '<button type="submit">Compare</button></form>'
    )


def _run_options(runs: Sequence[RunRecord], selected: str) -> str:
    return "".join(
        f'<option value="{text(r.id)}"{" selected" if r.id == selected else ""}>{text(_run_label(r))}</option>'
        for r in runs
    )


# --- one run --------------------------------------------------------------------------


def run_page(page: Page, run: RunRecord, live_after_row: int | None) -> str:
    """The run; ``live_after_row`` (the newest result row shown) turns on live
    updates from there, for a run still running."""
    parts = [
        f'<p class="meta">Suite <b>{text(run.suite)}</b> · started {_when(run.started_at)}'
        f"{_duration_note(run)} · {_status(run.status)} · concurrency {run.concurrency}</p>",
        _variant_summary(page, run),
    ]
    if run.status == "running" and live_after_row is not None:
        parts.append(_live_section(page, run, live_after_row))
    chart = success_by_category_svg(run.results)
    if chart:
        parts.append(f'<h2>Success by category</h2><div class="chart-box">{chart}</div>')
    parts.append(f"<h2>Tasks ({len(run.results)})</h2>")
    parts.append("".join(_task_details(o) for o in _task_order(run.results)) or "<p>No results yet.</p>")
    title = f"Run {run.id}" + (f" — {run.name}" if run.name else "")
    return _layout(page, title, "".join(parts), back=True)


def _duration_note(run: RunRecord) -> str:
    if run.finished_at is None:
        return ""
    return f" · took {_duration_ms((run.finished_at - run.started_at).total_seconds() * 1000)}"


def _variant_summary(page: Page, run: RunRecord) -> str:
    variants = sorted(set(run.variants) | {o.variant for o in run.results})
    per_variant = run.tasks_total // max(1, len(variants))
    rows = "".join(
        _variant_row(v, run.variants.get(v, ""), [o for o in run.results if o.variant == v], per_variant)
        for v in variants
    )
    table = (
        '<table class="summary"><thead><tr><th>Variant</th><th>Configured as</th><th>Done</th><th>Passed</th>'
        "<th>Success</th><th>Median latency</th><th>Median first token</th><th>Tokens in/out per task</th>"
        "<th>Cost per task</th><th>Tool calls per task</th><th>Errors</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    if {"A", "B"} <= {o.variant for o in run.results}:
        link = page.url("/eval/compare", base=run.id, run=run.id, base_variant="A", run_variant="B")
        table += f'<p><a href="{link}">Compare variant B with variant A</a></p>'
    return table


def _variant_row(variant: str, described: str, outcomes: Sequence[TaskOutcome], total: int) -> str:
    color = VARIANT_COLORS.get(variant, "#888")
    head = f'<td><span class="swatch" style="background:{color}"></span><b>{text(variant)}</b></td><td>{text(described)}</td>'
    if not outcomes:
        return f"<tr>{head}<td>0/{total}</td>" + "<td>—</td>" * 8 + "</tr>"
    passed = sum(o.passed for o in outcomes)
    first_tokens = [o.first_token_ms for o in outcomes if o.first_token_ms is not None]
    costs = [o.cost for o in outcomes if o.cost is not None]
    cells = [
        f"{len(outcomes)}/{total}",
        str(passed),
        f"{passed / len(outcomes):.0%}",
        _duration_ms(statistics.median(o.total_ms for o in outcomes)),
        _duration_ms(statistics.median(first_tokens)) if first_tokens else "—",
        f"{statistics.fmean(o.tokens_in for o in outcomes):,.0f} / {statistics.fmean(o.tokens_out for o in outcomes):,.0f}",
        f"${statistics.fmean(costs):.4f}" if costs else "—",
        f"{statistics.fmean(o.tool_calls for o in outcomes):.1f}",
        str(sum(o.error is not None for o in outcomes)),
    ]
    return f'<tr data-variant="{text(variant)}">{head}' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _live_section(page: Page, run: RunRecord, after_row: int) -> str:
    """The progress bar and the results as they come; the page's script
    feeds both from the run's event stream."""
    done = len(run.results)
    passed = sum(o.passed for o in run.results)
    rows = "".join(_live_row(o) for o in run.results)
    events = page.run_url(run.id, "/events") + f"?after={after_row}"
    return (
        f'<section id="live" data-events="{events}"><h2>Progress</h2>'
        f'<progress id="progress-bar" max="{max(run.tasks_total, 1)}" value="{done}"></progress> '
        f'<span id="progress-text">{done} / {run.tasks_total} done, {passed} passed</span>'
        '<table class="live"><thead><tr><th>Task</th><th>Variant</th><th>Category</th><th>Verdict</th>'
        f'<th>Time</th></tr></thead><tbody id="live-rows">{rows}</tbody></table></section>'
    )


def _live_row(o: TaskOutcome) -> str:
    verdict = "pass" if o.passed else "fail"
    return (
        f'<tr class="{verdict}" data-key="{text(o.task_id)}/{text(o.variant)}"><td>{text(o.task_id)}</td>'
        f"<td>{text(o.variant)}</td><td>{text(o.category)}</td><td>{verdict}</td><td>{o.total_ms} ms</td></tr>"
    )


def _task_order(results: Sequence[TaskOutcome]) -> list[TaskOutcome]:
    """Tasks in the order they first finished, each task's variants together."""
    first_seen: dict[str, int] = {}
    for index, outcome in enumerate(results):
        first_seen.setdefault(outcome.task_id, index)
    return sorted(results, key=lambda o: (first_seen[o.task_id], o.variant))


def _task_details(o: TaskOutcome) -> str:
    verdict = "pass" if o.passed else "fail"
    facts = [text(o.category), _duration_ms(o.total_ms), f"{o.tokens_in}/{o.tokens_out} tokens"]
    if o.tools:
        facts.append("tools: " + text(", ".join(o.tools)))
    summary = (
        f'<summary><span class="verdict {verdict}">{verdict.upper()}</span> <code>{text(o.task_id)}</code> '
        f'<span class="variant">{text(o.variant)}</span> <span class="facts">{" · ".join(facts)}</span></summary>'
    )
    body = [_checks(o)]
    if o.error:
        body.append(f'<p class="error">Error: {text(o.error)}</p>')
    body.append(_transcript(o.transcript))
    body.append(f'<p class="meta">{_model_note(o)}</p>')
    return (
        f'<details class="task {verdict}" data-task="{text(o.task_id)}" data-variant="{text(o.variant)}">'
        f"{summary}{''.join(body)}</details>"
    )


def _checks(o: TaskOutcome) -> str:
    if not o.checks:
        return '<p class="meta">No checks.</p>'
    items = "".join(
        f'<li class="{"ok" if c.passed else "bad"}">{"✓" if c.passed else "✗"} {text(c.check)}'
        + (f' <span class="detail">— {text(c.detail)}</span>' if c.detail else "")
        + "</li>"
        for c in o.checks
    )
    return f'<ul class="checks">{items}</ul>'


def _transcript(turns: Iterable[tuple[str, str]]) -> str:
    rendered = "".join(
        f'<div class="turn"><div class="user"><b>User</b><div class="said">{text(user)}</div></div>'
        f'<div class="assistant"><b>Assistant</b><div class="said">{text(answer)}</div></div></div>'
        for user, answer in turns
    )
    return f'<div class="transcript">{rendered or "<p>No transcript.</p>"}</div>'


def _model_note(o: TaskOutcome) -> str:
    notes = [f"model {text(o.model)}" if o.model else "no model answered"]
    if o.first_token_ms is not None:
        notes.append(f"first token {_duration_ms(o.first_token_ms)}")
    if o.cost is not None:
        notes.append(f"cost ${o.cost:.5f}")
    if o.fallbacks:
        notes.append(f"{o.fallbacks} fallback(s)")
    return " · ".join(notes)


# --- two runs side by side -----------------------------------------------------------------


def compare_page(page: Page, base: RunRecord, run: RunRecord, comparison: Comparison, variants: tuple[str, str]) -> str:
    base_variant, run_variant = variants
    metrics = "".join(
        f'<tr class="{_VERDICT_CLASSES[row.verdict]}"><td>{text(row.metric)}</td><td>{text(row.base_text)}</td>'
        f"<td>{text(row.run_text)}</td><td>{text(row.change_text)} <span class=\"word\">"
        f"{_VERDICT_WORDS[row.verdict]}</span></td></tr>"
        for row in comparison.rows
    )
    verdict = (
        '<p class="regressed">Regressed past a threshold: '
        + text("; ".join(f"{r.metric} {r.change_text}" for r in comparison.regressions))
        + "</p>"
        if comparison.regressed
        else '<p class="ok">No metric regressed past its threshold.</p>'
    )
    body = (
        f'<p class="meta">Base: <a href="{page.run_url(base.id)}">{text(comparison.base_label)}</a> · '
        f'Run: <a href="{page.run_url(run.id)}">{text(comparison.run_label)}</a> · '
        f"{comparison.base.tasks} tasks on both sides</p>{verdict}"
        '<table class="metrics"><thead><tr><th>Metric</th><th>Base</th><th>Run</th><th>Change</th></tr></thead>'
        f"<tbody>{metrics}</tbody></table>"
        "<p class=\"meta\">same: unchanged or within noise · worse: within its threshold · "
        "regressed: past its threshold</p>"
        f"<h2>Tasks</h2>{_task_comparison(base, base_variant, run, run_variant)}"
    )
    return _layout(page, "Comparison", body, back=True)


# Words, not the CLI's emoji: a browser without an emoji font shows those as boxes.
_VERDICT_WORDS = {
    Verdict.BETTER: "better", Verdict.SAME: "same", Verdict.WORSE: "worse",
    Verdict.REGRESSED: "regressed", Verdict.UNKNOWN: "",
}
_VERDICT_CLASSES = {
    Verdict.BETTER: "better", Verdict.SAME: "same", Verdict.WORSE: "worse",
    Verdict.REGRESSED: "regressed", Verdict.UNKNOWN: "unknown",
}


def _task_comparison(base: RunRecord, base_variant: str, run: RunRecord, run_variant: str) -> str:
    before = {o.task_id: o for o in base.results if o.variant == base_variant}
    after = {o.task_id: o for o in run.results if o.variant == run_variant}
    rows: list[str] = []
    for task_id in [*before, *(t for t in after if t not in before)]:
        old, new = before.get(task_id), after.get(task_id)
        category = (old or new).category  # type: ignore[union-attr]  (one side always has it)
        flip = _flip(old, new)
        rows.append(
            f'<tr class="{"flipped " + flip if flip else ""}" data-task="{text(task_id)}">'
            f"<td><code>{text(task_id)}</code></td><td>{text(category)}</td>"
            f"<td>{_verdict_cell(old)}</td><td>{_verdict_cell(new)}</td><td>{_FLIP_NOTES.get(flip, '')}</td></tr>"
        )
    return (
        '<table class="tasks"><thead><tr><th>Task</th><th>Category</th>'
        f"<th>Base ({text(base_variant)})</th><th>Run ({text(run_variant)})</th><th></th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


_FLIP_NOTES = {"fixed": "flipped: fail → pass", "broke": "flipped: pass → fail"}


def _flip(old: TaskOutcome | None, new: TaskOutcome | None) -> str:
    """"fixed" or "broke" for a task whose verdict changed; "" otherwise."""
    if old is None or new is None or old.passed == new.passed:
        return ""
    return "fixed" if new.passed else "broke"


def _verdict_cell(outcome: TaskOutcome | None) -> str:
    if outcome is None:
        return "—"
    verdict = "pass" if outcome.passed else "fail"
    return f'<span class="verdict {verdict}">{verdict}</span> {_duration_ms(outcome.total_ms)}'


# --- shared pieces ---------------------------------------------------------------------------


def problem_page(page: Page, title: str, message: str) -> str:
    return _layout(page, title, f'<p class="problem">{text(message)}</p>')


def _run_label(run: RunRecord) -> str:
    return f"{run.id} · {run.suite}" + (f" · {run.name}" if run.name else "") + f" · {run.started_at:%Y-%m-%d %H:%M}"


def _status(status: str) -> str:
    known = status if status in ("running", "finished", "failed") else "other"
    return f'<span class="status status-{known}">{text(status)}</span>'


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _duration_ms(ms: float) -> str:
    return f"{ms:,.0f} ms" if ms < 1000 else f"{ms / 1000:,.1f} s"


def _layout(page: Page, title: str, body: str, *, back: bool = False) -> str:
    nav = f'<nav><a href="{page.url("/eval")}">← All runs</a></nav>' if back else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="referrer" content="no-referrer"><title>{text(title)} · Arium</title>'
        f"<style>{_STYLE}</style></head><body>{nav}<h1>{text(title)}</h1>{body}"
        f'<script nonce="{text(page.nonce)}">{_SCRIPT}</script></body></html>'
    )


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1e2430}
h1{font-size:22px;margin:8px 0 12px}h2{font-size:17px;margin:24px 0 8px}
table{border-collapse:collapse;width:100%;margin:8px 0}th,td{border-bottom:1px solid #e3e6ec;padding:5px 8px;
text-align:left;vertical-align:top}th{background:#f5f6f9;font-weight:600}
a{color:#2d5bd1}code{font:13px ui-monospace,monospace}.meta{color:#5b6475}
.status{padding:1px 6px;border-radius:8px;font-size:12px;background:#e3e6ec}.status-running{background:#fff3c4}
.status-finished{background:#d8f3dc}.status-failed{background:#ffd6d6}
.verdict{font-weight:700;font-size:12px;padding:0 5px;border-radius:4px}.verdict.pass{color:#17733b;background:#d8f3dc}
.verdict.fail{color:#a61b1b;background:#ffd6d6}.variant{font-weight:700;color:#5b6475}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
details.task{border:1px solid #e3e6ec;border-radius:6px;margin:6px 0;padding:4px 10px}
details.task.fail{border-left:4px solid #d64545}details.task.pass{border-left:4px solid #2f9e5a}
summary{cursor:pointer;padding:3px 0}.facts{color:#5b6475}.checks{margin:6px 0;padding-left:18px}
.checks .ok{color:#17733b}.checks .bad{color:#a61b1b}.detail{color:#5b6475}.error{color:#a61b1b}
.turn{margin:6px 0}.said{white-space:pre-wrap;word-break:break-word;background:#f5f6f9;border-radius:6px;
padding:6px 8px;margin:2px 0 6px}.assistant .said{background:#eef3ff}
.chart-box{overflow-x:auto}.chart text{font:12px system-ui,sans-serif;fill:#1e2430}
progress{width:320px;height:14px;vertical-align:middle}
tr.pass td:nth-child(4){color:#17733b}tr.fail td:nth-child(4){color:#a61b1b}
tr.flipped.fixed{background:#e2f7e7}tr.flipped.broke{background:#ffe3e3}
.word{font-size:12px}tr.better td:last-child{color:#17733b}tr.worse td:last-child{color:#a05a00}tr.regressed{background:#ffe3e3}
.regressed{color:#a61b1b;font-weight:600}.ok{color:#17733b}form.compare{margin-top:24px}
select{max-width:420px}.problem{font-size:16px}
"""

# Drops the one-time token from the address bar (the session cookie carries
# on), and while a run is running feeds the progress bar and the live table
# from the run's event stream; once the run ends, reloads the page to show
# the final results. New rows are built with textContent, never innerHTML.
_SCRIPT = """
(function () {
  var here = new URL(location.href);
  if (here.searchParams.has("token")) {
    here.searchParams.delete("token");
    history.replaceState(null, "", here.pathname + here.search + here.hash);
  }
  var live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  var rows = document.getElementById("live-rows");
  var bar = document.getElementById("progress-bar");
  var note = document.getElementById("progress-text");
  var seen = {};
  Array.prototype.forEach.call(rows.rows, function (row) { seen[row.dataset.key] = true; });
  var source = new EventSource(live.dataset.events);
  source.addEventListener("result", function (event) {
    var result = JSON.parse(event.data);
    var key = result.task_id + "/" + result.variant;
    if (seen[key]) return;
    seen[key] = true;
    var row = rows.insertRow();
    row.dataset.key = key;
    row.className = result.passed ? "pass" : "fail";
    [result.task_id, result.variant, result.category, result.passed ? "pass" : "fail", result.total_ms + " ms"]
      .forEach(function (value) { row.insertCell().textContent = value; });
  });
  source.addEventListener("progress", function (event) {
    var progress = JSON.parse(event.data);
    bar.max = Math.max(progress.total, 1);
    bar.value = progress.done;
    note.textContent = progress.done + " / " + progress.total + " done, " + progress.passed + " passed";
  });
  source.addEventListener("end", function () { source.close(); location.reload(); });
})();
"""
