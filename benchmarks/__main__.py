"""`python -m benchmarks [--quick] [--only NAME ...]`: run every benchmark, rewrite the report.

Each benchmark runs as its own process (`python benchmarks/bench_*.py`, bounded in time) and
prints one JSON document; the results are saved to benchmarks/results/latest.json and
docs/PERFORMANCE.md is rewritten from them: the machine, the method of each benchmark, the
numbers, the ratios, whether each target is met, and the date. The historical GitHub tables
(benchmarks/performance_history.md) are appended as an appendix.

`--from FILE` rewrites docs/PERFORMANCE.md from saved results without running anything.
The exit status is 1 when a benchmark ran and missed a target (or failed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOC = REPO / "docs" / "PERFORMANCE.md"
HISTORY = HERE / "performance_history.md"
RESULTS = HERE / "results" / "latest.json"

BENCHMARKS = {
    "github": ("bench_github_webhooks.py", 300),
    "slack": ("bench_slack.py", 420),
    "calendar": ("bench_calendar_sync.py", 420),
    "memory": ("bench_memory.py", 900),
}


# -- running -----------------------------------------------------------------------------------


def run_one(name: str, quick: bool, log_dir: Path, extra: list[str] | None = None
            ) -> dict[str, Any]:
    script, limit = BENCHMARKS[name]
    command = [sys.executable, str(HERE / script), *(["--quick"] if quick else []),
               *(extra or [])]
    started = time.monotonic()
    print(f"[benchmarks] {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    log = log_dir / f"{name}.stderr"
    try:
        with log.open("wb") as err:
            done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=err,
                                  timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return {"benchmark": name, "error": f"did not finish within {limit} s", "met": False}
    seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        return {"benchmark": name, "error": f"exit {done.returncode}: {tail}", "met": False,
                "wall_seconds": seconds}
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return {"benchmark": name, "error": "no JSON on stdout", "met": False}
    report["wall_seconds"] = seconds
    print(f"[benchmarks] {name}: {seconds} s, met={report.get('met')}", file=sys.stderr,
          flush=True)
    return report


def postgres_version() -> str:
    sys.path.insert(0, str(REPO))
    from benchmarks.common import BASE_URL

    async def ask() -> str:
        import asyncpg
        from sqlalchemy.engine import make_url

        dsn = make_url(BASE_URL).set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        conn = await asyncpg.connect(dsn)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except Exception as exc:  # the report still gets written
        return f"unknown ({type(exc).__name__})"


def machine() -> dict[str, Any]:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "postgresql": postgres_version(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "commit": commit,
    }


# -- the report --------------------------------------------------------------------------------


def yes(met: Any) -> str:
    return "**met**" if met else "**not met**"


def n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, int | float):
        return f"{value:,.0f}" if abs(value) >= 100 or not digits else f"{value:,.{digits}f}"
    return str(value)


def ms(value: Any) -> str:
    return "–" if value is None else f"{value:,.1f} ms"


def failed(report: dict[str, Any]) -> str | None:
    return report.get("error")


def summary_rows(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| benchmark | measure | target | result | |", "|---|---|---|---|---|"]
    gh = results.get("github")
    if gh and not failed(gh):
        rows.append(f"| GitHub webhooks | throughput ratio gateway/baseline | ≥ 0.5 | "
                    f"{gh['throughput_ratio']:.3f} | {yes(gh['throughput_ratio'] >= 0.5)} |")
        rows.append(f"| | gateway p99 | < 50 ms | {ms(gh['gateway']['p99_ms'])} | "
                    f"{yes(gh['gateway']['p99_ms'] < 50)} |")
    sl = results.get("slack")
    if sl and not failed(sl):
        a = sl["status_command"]
        rows.append(f"| Slack `/tt status` | throughput ratio gateway/baseline | ≥ 0.5 | "
                    f"{a['throughput_ratio']:.3f} | {yes(a['throughput_ratio'] >= 0.5)} |")
        rows.append(f"| | gateway p99 | < 100 ms | {ms(a['gateway']['p99_ms'])} | "
                    f"{yes(a['gateway']['p99_ms'] < 100)} |")
        b = sl["timer_while_slack_hangs"]
        r = b["ratio_hanging_over_healthy"]
        rows.append(f"| Timer start while Slack hangs | p50 ratio hanging/healthy | ≤ 1.10 | "
                    f"{r['p50']:.3f} | {yes(r['p50'] <= 1.10)} |")
        rows.append(f"| | p99 ratio hanging/healthy | ≤ 1.10 | {r['p99']:.3f} | "
                    f"{yes(r['p99'] <= 1.10)} |")
        c = sl["insert_to_post"]
        rows.append(f"| `time_entries` INSERT → chat.postMessage | p99 | < 1 s | "
                    f"{ms(c['insert_to_post']['p99_ms'])} | {yes(c['met'])} |")
    gc = results.get("calendar")
    if gc and not failed(gc):
        d = gc["met_detail"]
        rows.append(f"| Calendar sync, {gc['users']} users | speed-up over one at a time | ≥ 8× | "
                    f"{gc['speedup']:.2f}× | {yes(d['speedup'])} |")
        rows.append(f"| | RSS growth, concurrent vs one at a time | flat (≤ +32 MiB) | "
                    f"+{gc['concurrent']['growth_mib']} MiB (peak {gc['peak_rss_mib']} MiB) | "
                    f"{yes(d['memory_flat'])} |")
        rows.append(f"| | {gc['failing_users']} users with invalid_grant | others unaffected | "
                    f"{gc['concurrent']['healthy_users_with_all_entries']}/"
                    f"{gc['concurrent']['healthy_users']} complete | {yes(d['isolated'])} |")
    me = results.get("memory")
    if me and not failed(me):
        w = me["webhooks"]
        rows.append(f"| Memory, {w['webhooks']:,} webhooks | RSS growth after 1,000 | "
                    f"≤ {w['allowed_growth_mib']} MiB | {w['growth_mib']:+.1f} MiB | "
                    f"{yes(w['met'])} |")
        day = me["compressed_day"]
        g = day["growth"]
        rows.append(f"| {day['days']} compressed days of jobs | growth of tasks / fds / "
                    f"connections after day 1 | none | {g['tasks']:+d} / {g['fds']:+d} / "
                    f"{g['pg_connections']:+d} | {yes(day['met'])} |")
    for name, report in results.items():
        if failed(report):
            rows.append(f"| {name} | – | – | failed: {report['error'][:120]} | **not met** |")
    return rows


def github_section(gh: dict[str, Any]) -> list[str]:
    b, g = gh["baseline"], gh["gateway"]
    return [
        "## GitHub webhook deliveries",
        "",
        f"`python benchmarks/bench_github_webhooks.py` ({gh['requests']:,} requests, "
        f"{gh['concurrency']} concurrent senders)",
        "",
        "- **Gateway**: `python -m gateway` (a real process, default settings, scheduler off) on "
        "a fresh, migrated PostgreSQL database with one active GitHub integration; every request "
        "is a signed `issues.opened` delivery (the published payload, a new issue number and "
        "delivery id each time), so each one verifies the HMAC, records the delivery id and "
        "creates a task.",
        "- **Baseline**: `benchmarks/baseline_server.py`, a bare aiohttp handler that verifies "
        "the same HMAC and does one `INSERT` through an asyncpg pool.",
        "- Target (issue 3): throughput at least 50% of the baseline's, p99 under 50 ms.",
        "",
        "| | rps | p50 | p99 | server CPU / request | PostgreSQL CPU / request |",
        "|---|---|---|---|---|---|",
        f"| baseline | {n(b['rps'])} | {ms(b['p50_ms'])} | {ms(b['p99_ms'])} | "
        f"{b['cpu_ms_server']} ms | {b['cpu_ms_postgres']} ms |",
        f"| gateway | {n(g['rps'])} | {ms(g['p50_ms'])} | {ms(g['p99_ms'])} | "
        f"{g['cpu_ms_server']} ms | {g['cpu_ms_postgres']} ms |",
        "",
        f"Ratio **{gh['throughput_ratio']:.3f}** ({yes(gh['throughput_ratio'] >= 0.5)}), "
        f"gateway p99 {ms(g['p99_ms'])} ({yes(g['p99_ms'] < 50)}, the baseline's own p99 "
        f"was {ms(b['p99_ms'])}); failures {g['failures']}. "
        "Earlier runs of this benchmark (appendix) put the ratio at 0.44–0.63 (median 0.51) on "
        "the same code: on this machine one run is not enough to call a 10% difference.",
        "",
    ] + ([
        f"This run's baseline managed {n(b['rps'])} requests/s, where it did 2,069–3,138 in "
        "the appendix's runs: the machine gave this run a fraction of the CPU it had then, "
        "and at 32 senders every p99 (the baseline's too) is mostly the queue for it. "
        + ("The ratio holds up under such load; the absolute p99 does not."
           if gh["throughput_ratio"] >= 0.5 else
           "This run's ratio is below the appendix's range too: under this much load from "
           "elsewhere neither number says much about the code; the appendix's runs on a "
           "quieter machine do."),
        "",
    ] if b["rps"] < 2000 else [])


def slack_section(sl: dict[str, Any]) -> list[str]:
    a, b, c = sl["status_command"], sl["timer_while_slack_hangs"], sl["insert_to_post"]
    ab, ag = a["baseline"], a["gateway"]
    r = b["ratio_hanging_over_healthy"]
    lines = [
        "## Slack",
        "",
        "`python benchmarks/bench_slack.py`: one fresh database, one gateway process whose "
        "`SLACK_API_URL` is a fake Slack Web API served by the benchmark, "
        f"{a['integrations']} Slack integrations sharing one app (one signing secret), as "
        "several users of one workspace do.",
        "",
        f"### `/tt status` at {a['concurrency']} concurrent senders",
        "",
        "Every request is a slash command signed like Slack signs it (v0 HMAC of timestamp and "
        "body) from a linked user with a running timer. The gateway verifies it against every "
        "active Slack integration's secret, routes it to the linked user, and answers with the "
        "project, start time and elapsed time. The baseline (`baseline_server.py`, the same "
        "route) checks the same signature and timestamp and runs one `SELECT` of the running "
        "entry and its project. Target (issue 10): throughput at least 50% of the baseline's, "
        "p99 under 100 ms.",
        "",
        "| | rps | p50 | p99 | server CPU / request | PostgreSQL transactions / request | "
        "new PostgreSQL sessions |",
        "|---|---|---|---|---|---|---|",
        f"| baseline | {n(ab['rps'])} | {ms(ab['p50_ms'])} | {ms(ab['p99_ms'])} | "
        f"{ab['server_cpu_ms_per_request']} ms | {ab['pg_transactions_per_request']} | "
        f"{ab['pg_sessions_opened']} |",
        f"| gateway | {n(ag['rps'])} | {ms(ag['p50_ms'])} | {ms(ag['p99_ms'])} | "
        f"{ag['server_cpu_ms_per_request']} ms | {ag['pg_transactions_per_request']} | "
        f"{ag['pg_sessions_opened']} |",
        "",
        f"Ratio **{a['throughput_ratio']:.3f}**, gateway p99 **{ms(ag['p99_ms'])}**: "
        f"{yes(a['met'])}.",
        "",
    ]
    lines += [
        "How: on PostgreSQL a command takes one pooled asyncpg connection in autocommit for "
        "its reads, with no ORM session and no transaction. One statement reads the active "
        "Slack integrations (of each only the signing secret, the linked member ID, the "
        "workspace and whether its owner is active); the signature is checked once per "
        "distinct secret; `/tt status` then reads the running entry with its project and task "
        "names in a second statement on the same connection. The other commands (start, "
        "stop, today) run through the timer service in transactions of their own.",
        "",
    ]
    if not a["met"]:
        cpu_ratio = ag["server_cpu_ms_per_request"] / max(ab["server_cpu_ms_per_request"], 0.01)
        lines += [
            f"Why not met: the gateway spends about {cpu_ratio:.1f}× the baseline's CPU per "
            f"command ({ag['server_cpu_ms_per_request']} ms against "
            f"{ab['server_cpu_ms_per_request']} ms): the middleware chain every route has "
            "(metrics, security headers, errors, shutdown, database outages, sessions, "
            "templates), the pool checkout and the second statement. With both servers, "
            "PostgreSQL and the load generator on two shared cores, throughput follows CPU "
            "per request, and at 50 senders the p99 is the queue behind that CPU (the "
            f"baseline's own p99 in this run: {ms(ab['p99_ms'])}). Single runs move a lot "
            "on this machine; the appendix lists several.",
            "",
        ]
    lines += [
        "### Timer start while Slack hangs",
        "",
        f"{b['users']} users start and stop their timers through `POST /api/timer/start` and "
        f"`/api/timer/stop` (each user one after the other, all users at once), "
        f"{b['starts_per_user_per_block']} starts per user per block, in {b['rounds']} "
        "alternating pairs of blocks: the fake Slack answers every chat.postMessage at once, "
        "then answers none (the connection stays open; the gateway's client would give up "
        "after its 10 s timeout; when the next healthy block begins, Slack \"recovers\" and "
        "answers the calls left hanging, so a healthy block never waits out a hanging one's "
        f"call; calls that hung: {b['slack_calls_left_hanging']}). "
        "Target (issue 10): start latency while Slack hangs within 10% of the healthy one, "
        "at p50 and p99.",
        "",
        "| Slack | starts | start p50 | start p99 | stop p50 | stop p99 |",
        "|---|---|---|---|---|---|",
        f"| healthy | {b['start_healthy']['n']} | {ms(b['start_healthy']['p50_ms'])} | "
        f"{ms(b['start_healthy']['p99_ms'])} | {ms(b['stop_healthy']['p50_ms'])} | "
        f"{ms(b['stop_healthy']['p99_ms'])} |",
        f"| hanging | {b['start_hanging']['n']} | {ms(b['start_hanging']['p50_ms'])} | "
        f"{ms(b['start_hanging']['p99_ms'])} | {ms(b['stop_hanging']['p50_ms'])} | "
        f"{ms(b['stop_hanging']['p99_ms'])} |",
        "",
        f"Ratio hanging/healthy: p50 **{r['p50']:.3f}**, p99 **{r['p99']:.3f}**; failures "
        f"{b['failures']}: {yes(b['met'])}. Notifications come from the outbox after the "
        "timer's transaction commits, so a hanging Slack only holds the dispatcher (one event "
        "at a time, no database connection held while it waits). With Slack healthy the "
        "gateway also does the posting work during the block, which is why the hanging "
        "blocks can come out faster; the ratio is a bound on the harm a hanging Slack does, "
        "not a measure of posting cost.",
        "",
        "### From a `time_entries` INSERT to chat.postMessage",
        "",
        f"{c['inserts']} times, one after the other: a running entry is INSERTed straight into "
        "`time_entries` over a separate asyncpg connection (autocommit, as TimeTracker's own "
        "UI would write it); the clock stops when the fake Slack receives the chat.postMessage "
        "whose Stop button carries that entry's id. Then the entry is stopped with an UPDATE "
        "and the stop message timed the same way. The path: the trigger of migration 158 "
        "writes the outbox row and NOTIFYs, the dispatcher LISTENs, claims and posts. "
        "Target (issue 10): p99 under 1 s.",
        "",
        "| | n | p50 | p99 | max |",
        "|---|---|---|---|---|",
        f"| INSERT → start message | {c['insert_to_post']['n']} | "
        f"{ms(c['insert_to_post']['p50_ms'])} | {ms(c['insert_to_post']['p99_ms'])} | "
        f"{ms(c['insert_to_post']['max_ms'])} |",
        f"| UPDATE end_time → stop message | {c['update_end_time_to_post']['n']} | "
        f"{ms(c['update_end_time_to_post']['p50_ms'])} | "
        f"{ms(c['update_end_time_to_post']['p99_ms'])} | "
        f"{ms(c['update_end_time_to_post']['max_ms'])} |",
        "",
        f"Lost: {c['lost']}. {yes(c['met'])}.",
        "",
    ]
    return lines


def calendar_section(gc: dict[str, Any]) -> list[str]:
    cc, seq = gc["concurrent"], gc["one_at_a_time"]
    d = gc["met_detail"]
    lines = [
        "## Google Calendar sync",
        "",
        f"`python benchmarks/bench_calendar_sync.py`: {gc['users']} connected users on a fresh "
        "database, a local fake Google (a process of its own) that waits "
        f"{gc['google_delay_ms']} ms before every answer (token refresh, events.list: the "
        "seven recorded events on one page, four of them importable), "
        f"{gc['failing_users']} users (5%) whose expired token's refresh answers "
        "`invalid_grant`. The services are built as `run-job` builds them (`build_services`, "
        "clock injected). First the scheduled job itself (`Scheduler.run"
        f"(\"google_calendar_sync\")`, GATEWAY_SYNC_CONCURRENCY={gc['concurrency']}); then "
        "entries, links and configs are put back and the same job's work runs with a runner "
        f"of concurrency 1 over the first {seq['users']} users, its duration scaled to all "
        f"{gc['users']} (one at a time is linear by construction; `--sequential-users "
        f"{gc['users']}` measures them all, about two minutes). Targets (issue 8): at least 8× "
        "faster, memory flat (peak RSS reported), no user's failure affecting another's result.",
        "",
        "| run | users | seconds | per user | Google calls | outcome (ok / failed) | "
        "gateway CPU / user | PostgreSQL CPU / user | RSS before → peak |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| concurrent ({gc['concurrency']}) | {gc['users']} | {cc['seconds']} | "
        f"{cc['seconds'] * 1000 / gc['users']:.0f} ms | {cc['google_calls']} | "
        f"{cc['job_outcome']} ({cc['succeeded']} / {cc['failed']}) | "
        f"{cc['cpu_ms_per_user_gateway']} ms | {cc['cpu_ms_per_user_postgres']} ms | "
        f"{cc['rss_before_mib']} → {cc['rss_peak_mib']} MiB |",
        f"| one at a time | {seq['users']} | {seq['seconds']} (scaled: "
        f"{seq['seconds_scaled_to_all_users']}) | {seq['seconds'] * 1000 / seq['users']:.0f} ms"
        f" | {seq['google_calls']} | {seq['job_outcome']} ({seq['succeeded']} / "
        f"{seq['failed']}) | {seq['cpu_ms_per_user_gateway']} ms | "
        f"{seq['cpu_ms_per_user_postgres']} ms | {seq['rss_before_mib']} → "
        f"{seq['rss_peak_mib']} MiB |",
        "",
        f"Speed-up **{gc['speedup']:.2f}×**: {yes(d['speedup'])}. Memory: peak "
        f"{gc['peak_rss_mib']} MiB, the concurrent run grew RSS by {cc['growth_mib']} MiB: "
        f"{yes(d['memory_flat'])}. Isolation: {cc['healthy_users_with_all_entries']} of "
        f"{cc['healthy_users']} healthy users got all four entries while "
        f"{cc['failing_users_marked_reconnect']} of {cc['failing_users']} failing users were "
        "marked reconnect_required with no entries, per-user results identical in both runs: "
        f"{yes(d['isolated'])}.",
        "",
    ]
    per_user = seq["seconds"] * 1000 / seq["users"]
    wall_conc = cc["seconds"] * 1000 / gc["users"]
    gw_cpu = cc["cpu_ms_per_user_gateway"]
    share = gw_cpu / wall_conc if wall_conc else 0.0
    why = (
        "How: the job runs in one Python process and the fake Google in another (Google's "
        "side of a call costs the gateway nothing in production). A user's sync is one read "
        "(the integration with its import project's status), the events call, per page of "
        "events two reads (the page's links with their entries; the `[gcal:]` adoption "
        "candidates for events not linked yet) and one write, and one compare-and-set write "
        "of the outcome with `last_sync_at`. On PostgreSQL all of these run on the pool's "
        "asyncpg connection, the page's write as one data-modifying `WITH` statement "
        "(atomic on its own, no BEGIN or COMMIT); the unique key on (integration, event id) "
        "keeps concurrent syncs from importing twice. Before this rework each event had a "
        "transaction, an advisory lock and ORM objects of its own (18–42 ms of CPU per user, "
        "5.8× and less), then one Core transaction per page (6.7–7.0×); the appendix has the "
        f"runs. In this run the process spent {gw_cpu} ms of CPU per user, {share:.0%} of a "
        f"core ({wall_conc:.0f} ms of wall time per user at the bound)."
    )
    if not d["speedup"]:
        at_bound = wall_conc * gc["concurrency"]
        allowed = per_user * gc["concurrency"] / 8
        why += (
            f" Why not met: at this bound each user's sync took about {at_bound:.0f} ms "
            f"against {per_user:.0f} ms alone, each database round trip waiting its turn "
            "behind the other users' work in the one event loop and at PostgreSQL on the "
            f"shared cores; 8× needs it within about {allowed:.0f} ms. Single runs move with "
            "the machine's load."
        )
    lines += [why, ""]
    return lines


def memory_section(me: dict[str, Any]) -> list[str]:
    w, day = me["webhooks"], me["compressed_day"]
    cps = " → ".join(f"{c['rss_mib']}" for c in w["checkpoints"])
    marks = " / ".join(f"{c['webhooks']:,}" for c in w["checkpoints"])
    per_day = day["max_per_day"]
    half_at = min((c["webhooks"] for c in w["checkpoints"]),
                  key=lambda x: abs(x - w["webhooks"] / 2))
    return [
        "## Memory and compressed days",
        "",
        "`python benchmarks/bench_memory.py` (issue 9, item 5).",
        "",
        f"### RSS over {w['webhooks']:,} webhooks",
        "",
        "A real gateway process, one GitHub integration, signed `issues.opened` deliveries from "
        "32 senders, each a new issue (so a new task) and delivery id. The gateway's VmRSS is "
        f"read after 1,000 and at eight checkpoints up to {w['webhooks']:,} "
        + ("(the issue's number; " if w["webhooks"] >= 100_000 else
           "(this run's bound; the issue's 100,000 is `--memory-webhooks 100000`, ")
        + f"{w['seconds']:,.0f} s here at {w['rate_per_s']:,.0f}/s). "
        "Target: RSS after all of them at most that after 1,000 + max(8 MiB, 5%), "
        "and the last half adding at most 2 MiB.",
        "",
        f"RSS (MiB) at {marks} deliveries: {cps}.",
        "",
        f"Growth after 1,000: **{w['growth_mib']:+.1f} MiB** (allowed {w['allowed_growth_mib']}"
        f" MiB), last half {w['growth_second_half_mib']:+.1f} MiB, failures {w['failures']}: "
        f"{yes(w['met'])}.",
        "",
    ] + ([
        f"Inside the bound, but not a plateau: RSS still rose {w['growth_second_half_mib']} MiB "
        f"over the last {w['webhooks'] - half_at:,} deliveries (about "
        f"{w['growth_second_half_mib'] * 1048576 / max(w['webhooks'] - half_at, 1):.0f} bytes "
        "each). At that rate a million deliveries would add about "
        f"{w['growth_second_half_mib'] * 1_000_000 / max(w['webhooks'] - half_at, 1):.0f} MiB. "
        "Whether that is a slow leak or the allocator settling, this benchmark cannot tell; a "
        "longer soak or a tracemalloc comparison in the gateway would. Not investigated here.",
        "",
    ] if w["growth_second_half_mib"] > 0.5 else []) + [
        f"### {day['hours']:.0f} hours of scheduled jobs, compressed",
        "",
        "The services as `run-job` builds them, the timer-event dispatcher running (its LISTEN "
        f"connection included), an injected clock moved through {day['days']} days of "
        "half-hour slots; every job whose cron fires in a slot runs through "
        f"`Scheduler.run(name, slot=…)` as the tick would: {day['google_users']} Google "
        f"Calendar users (one failing with invalid_grant), {day['slack_users']} Slack users "
        "with daily summaries spread over the day, the prune jobs. "
        f"It took {day['seconds']} s. Job runs: "
        + ", ".join(f"{k} {v}" for k, v in sorted(day["job_runs"].items()))
        + f"; {day['slack_posts']} summaries posted, {day['google_calls']} Google calls. "
        "After each slot: asyncio tasks, open file descriptors, the database's connections "
        "(pg_stat_activity) and the pool's checked-out connections. The first day warms the "
        "pools up (connections are opened as concurrency first needs them); the next repeats "
        "the schedule and must need no more.",
        "",
        "| day | tasks (max) | open fds (max) | PostgreSQL connections (max) | RSS at its end |",
        "|---|---|---|---|---|",
        *(
            f"| {d} | {v['tasks']} | {v['fds']} | {v['pg_connections']} | "
            f"{day['rss_end_of_day_mib'][int(d) - 1]} MiB |"
            for d, v in per_day.items()
        ),
        "",
        f"Connections checked out between slots: at most "
        f"{day['max_pool_checked_out_between_slots']} (pool size {day['pool_size']}). "
        f"{yes(day['met'])}. (RSS is this process's, the fakes included, which keep what they "
        "were sent: information, not a target.)",
        "",
    ]


def render(results: dict[str, dict[str, Any]], info: dict[str, Any], quick: bool,
           when: datetime) -> str:
    mem = results.get("memory") or {}
    sent = (mem.get("webhooks") or {}).get("webhooks")
    webhooks = sent if sent and sent != (10_000 if quick else 30_000) else None
    out = [
        "# Performance",
        "",
        f"Generated by `python -m benchmarks{' --quick' if quick else ''}"
        f"{' --memory-webhooks ' + str(webhooks) if webhooks else ''}` on "
        f"{when:%Y-%m-%d %H:%M} UTC (commit {info.get('commit') or '?'}). Every target is a "
        "ratio against a baseline measured in the same run, or a bound measured against local "
        "fakes, never a timed test. Rerun with `python -m benchmarks` (about five minutes here) "
        "or `python -m benchmarks --quick` (about two and a half); `--only NAME` runs one of "
        f"{', '.join(BENCHMARKS)}. Raw results: `benchmarks/results/latest.json`.",
        "",
        "## Machine",
        "",
        f"- {info['cores']} cores ({info['cpu']}), {info['ram_gib']} GiB RAM, Linux "
        f"{info['kernel']}",
        f"- Python {info['python']}, PostgreSQL {info['postgresql']} on loopback",
        f"- Load average when the run began: {', '.join(map(str, info['load_average_at_start']))}"
        " (the machine is shared with other work: absolute numbers move by tens of percent "
        "between runs; the gateway, its baseline, PostgreSQL and the load generator all share "
        "the same cores, so absolute numbers are pessimistic and the ratios are what count)",
        "",
        "## Summary",
        "",
        *summary_rows(results),
        "",
    ]
    if quick:
        out += ["This was a `--quick` run: smaller counts (see each section), so wider noise.",
                ""]
    sections = {"github": github_section, "slack": slack_section,
                "calendar": calendar_section, "memory": memory_section}
    for name, section in sections.items():
        report = results.get(name)
        if report is None:
            continue
        if failed(report):
            out += [f"## {name}", "", f"The benchmark failed: `{report['error'][:500]}`", ""]
            continue
        out += section(report)
    out += ["## Appendix: GitHub webhook history (2026-11-29)", ""]
    out += [HISTORY.read_text().strip(), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts in every benchmark")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS),
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--from", dest="from_file", metavar="FILE",
                        help="rewrite the report from saved results, run nothing")
    parser.add_argument("--memory-webhooks", type=int, metavar="N",
                        help="webhooks of the memory soak (default 30,000; the issue's 100,000 "
                        "takes 80 s to 6 minutes here)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the results, leave docs/PERFORMANCE.md alone")
    args = parser.parse_args(argv)
    if args.from_file:
        saved = json.loads(Path(args.from_file).read_text())
        results, info, quick = saved["results"], saved["machine"], saved["quick"]
        when = datetime.fromisoformat(saved["date"])
    else:
        info = machine()
        when = datetime.now(UTC)
        quick = args.quick
        log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"benchmarks-{when:%Y%m%d%H%M%S}"
        log_dir.mkdir(parents=True, exist_ok=True)
        extra = {"memory": ["--webhooks", str(args.memory_webhooks)]} if args.memory_webhooks \
            else {}
        results = {name: run_one(name, quick, log_dir, extra.get(name))
                   for name in (args.only or BENCHMARKS)}
        if args.only and RESULTS.exists():  # the others keep their last saved results
            saved = json.loads(RESULTS.read_text())
            results = {**saved["results"], **results}
            results = {name: results[name] for name in BENCHMARKS if name in results}
        print(f"[benchmarks] logs in {log_dir}", file=sys.stderr)
        if not args.no_write:
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(json.dumps({"date": when.isoformat(), "quick": quick,
                                           "machine": info, "results": results}, indent=2))
    if args.no_write:
        print(json.dumps(results, indent=2))
    else:
        DOC.write_text(render(results, info, quick, when))
        print(f"[benchmarks] wrote {DOC.relative_to(REPO)}", file=sys.stderr)
    if args.from_file:
        return 0
    return 0 if all(r.get("met") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
