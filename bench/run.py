"""``python -m bench.run --all``: run the benchmarks, write ``bench/results/*.json`` and the table.

Sections (``--only`` takes a comma-separated list): engine, rules, memory, profile, compiled, jobs (no
broker); live, scaleout, failover, latency, recovery (embedded broker, worker processes). Each figure is a ratio
against a baseline measured in the same run; see bench/README.md for what each one measures.
``--readme`` also rewrites the table under "Current figures" in bench/README.md from the results files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import REPO, RESULTS, log, machine, ratio, write_result
from .engine import ENGINE_GOAL
from .live import LIVE_GOAL

SECTIONS = ("engine", "rules", "memory", "profile", "compiled", "jobs",
            "live", "scaleout", "failover", "latency", "recovery")  # fmt: skip
BEGIN, END = "<!-- bench:table:begin -->", "<!-- bench:table:end -->"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--all", action="store_true", help="every section (the default when --only is not given)")
    parser.add_argument("--only", default="", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--events", type=int, default=1_000_000, help="engine log length (default 1,000,000)")
    parser.add_argument("--curve-events", type=int, default=100_000, help="log length for the rule-count curve")
    parser.add_argument("--memory-events", type=int, default=None, help="distinct actors (default: --events)")
    parser.add_argument("--profile-events", type=int, default=100_000)
    parser.add_argument("--compiled-events", type=int, default=200_000,
                        help="log length of the mypyc probe (section compiled)")  # fmt: skip
    parser.add_argument("--compiled-rounds", type=int, default=3, help="interleaved rounds of the mypyc probe")
    parser.add_argument("--jobs-events", type=int, default=None,
                        help="log length of backtest --jobs N (section jobs; default: --events)")  # fmt: skip
    parser.add_argument("--jobs-list", default="1,2", help="the N of each backtest --jobs N run; 1 is the baseline")
    parser.add_argument("--jobs-rounds", type=int, default=3, help="interleaved rounds of section jobs")
    parser.add_argument("--jobs-split-events", type=int, default=200_000,
                        help="first lines of the log for the cost split of section jobs")  # fmt: skip
    parser.add_argument("--live-events", type=int, default=60_000, help="events per live throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the live variants")
    parser.add_argument("--latency-rates", default="2000,250",
                        help="events/s of each latency run; the first is the goal's (2,000/s)")  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--recovery-sizes", default="100,10000,40000",
                        help="events of state before each restart; the first is the baseline")  # fmt: skip
    parser.add_argument("--workdir", default=None, help="where generated logs go (default: a temp dir)")
    parser.add_argument("--readme", action="store_true", help="rewrite the table in bench/README.md from bench/results")
    parser.add_argument("--table-only", action="store_true", help="print the table from bench/results; run nothing")
    return parser.parse_args(argv)


def run_section(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from . import compiled, engine, jobs, live

    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "engine": lambda: engine.throughput(workdir, args.events),
        "rules": lambda: engine.rule_curve(workdir, args.curve_events),
        "memory": lambda: engine.memory(workdir, args.memory_events or args.events),
        "profile": lambda: engine.profile(workdir, args.profile_events),
        "compiled": lambda: compiled.probe(workdir, args.compiled_events, args.compiled_rounds),
        "jobs": lambda: jobs.throughput(workdir, args.jobs_events or args.events,
                                        [int(n) for n in args.jobs_list.split(",")], args.jobs_rounds,
                                        args.jobs_split_events),
        "live": lambda: live.throughput(workdir, args.live_events, args.rounds),
        "scaleout": lambda: live.scale_out(workdir, args.live_events, args.rounds),
        "failover": lambda: live.failover(workdir, args.live_events, args.rounds),
        "latency": lambda: live.latencies(workdir, [float(r) for r in args.latency_rates.split(",")],
                                          args.latency_seconds),
        "recovery": lambda: live.recovery(workdir, [int(s) for s in args.recovery_sizes.split(",")]),
    }
    return sections[name]()


# -- the table ----------------------------------------------------------------------------------


def _verdict(value: float | None, goal: float, higher_is_better: bool = True) -> str:
    if value is None or value != value:
        return "n/a"
    if (value >= goal) if higher_is_better else (value <= goal):
        return "met"
    factor = goal / value if higher_is_better else value / goal
    digits = 2 if factor < 1.1 else 1
    return f"missed ({factor:.{digits}f}x short)" if higher_is_better else f"missed ({factor:.{digits}f}x over)"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _changelog(run: dict[str, Any]) -> str:
    """What the worker wrote to its changelog in a latency run, for runs that recorded it."""
    if run.get("changelog_mb_per_s") is None:
        return ""
    per_event = run["changelog_records"] / max(run["events_processed_by_worker"], 1)
    return f"; changelog {per_event:.2f} records/event, {run['changelog_mb_per_s']} MB/s"


def _latency_ratio(run: dict[str, Any]) -> str:
    """Detection over transport, p99 when both are known, else p50."""
    if run["ratio_p99_vs_transport"] is not None:
        return f"p99 {run['ratio_p99_vs_transport']}x"
    return f"p50 {run['ratio_p50_vs_transport']}x" if run["ratio_p50_vs_transport"] is not None else "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value} ms"


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def _cpu(summary: dict[str, Any] | None, rate: float) -> str:
    """The cores a live run's timed processes used and their CPU time per event, for runs that
    measured it (since 30 Nov 2026 11:20)."""
    if not summary or summary.get("timed_cores") is None or not rate:
        return ""
    text = f"; {summary['timed_cores']} cores, {summary['timed_cores'] / rate * 1e6:,.0f} us CPU/event"
    if summary.get("broker_cores") is not None:
        text += f" (broker {summary['broker_cores']} cores)"
    return text


def _latency_cpu(run: dict[str, Any]) -> str:
    """Cores used over a latency run's measured stretch, for runs that measured it."""
    cpu = run.get("cpu")
    if not cpu:
        return ""
    parts = ", ".join(f"{name} {cores}" for name, cores in cpu["cores"].items() if cores is not None)
    busy = cpu.get("machine_busy_cores")
    return f"; cores used: {parts}" + (f"; machine {busy} of {cpu['nproc']} busy" if busy is not None else "")


def _state_read(run: dict[str, Any], name: str) -> str:
    """A failover's state read-back: its median time, and how many partitions each run read from
    the changelog's start (runs before 30 Nov 2026 13:16 lack both)."""
    seconds = (run.get("state_read_s") or {}).get(name)
    counts = (run.get("partitions_read_from_start") or {}).get(name)
    runs = (run.get("runs") or {}).get(name) or []
    if seconds is None and runs and all("active_read_from_offset" in r and "state_read_s" not in r for r in runs):
        # Faust logged where each partition's reading would start, and then had nothing to read
        return " (nothing read back: each run started every partition after an offset its store held)"
    if seconds is None or not counts:
        return ""
    if len(set(counts)) == 1:
        n = run["partitions"]
        every = f"each run read {f'all {n}' if counts[0] == n else f'{counts[0]} of {n}'}"
        return f" (state read back in {seconds} s; {every} partitions from the changelog's start)"
    return f" (state read back in {seconds} s; partitions read from the changelog's start, by run: {counts})"


def _jobs_rows(j: dict[str, Any], add: Callable[..., None]) -> None:
    """Section jobs: each ``--jobs N`` against ``--jobs 1``, the cost split with its estimates, and
    whether every run's alerts were byte-identical."""
    one = j["by_jobs"]["1"]
    per_event = "{events_per_s:,} ev/s, {cores} cores, {cpu_us_per_event} us CPU/event"
    base = "`--jobs 1` " + per_event.format(**one)
    for n, row in j["by_jobs"].items():
        if n == "1":
            continue
        goal = n == "2"
        rounds = f"{j['rounds']} rounds, medians" if j["rounds"] > 1 else "1 round"
        add(f"Parallel backtest: `backtest --jobs {n}`, {j['events']:,} events ({rounds})",
            per_event.format(**row), base, f"{row['ratio_vs_jobs_1']}x",
            ">= 1.7x" if goal else "-", _verdict(row["ratio_vs_jobs_1"], 1.7) if goal else "-")  # fmt: skip
    sp = j["split"]
    shares = ", ".join(f"{name} {max(share, 0.0):.0%}" for name, share in sp["shares"].items())
    ideal = ", ".join(f"{n}: {x}x" for n, x in sp["ideal_speedup"].items())
    measured = f" (measured `--jobs 2`: {j['jobs_2_vs_ideal']}x of its ideal)" if j.get("jobs_2_vs_ideal") else ""
    if sp.get("gc_share") is not None:
        shares += f" (garbage collector {sp['gc_share']:.0%}, inside those)"
    add(f"Parallel backtest: where one process's time goes, first {sp['events']:,} events, each step timed "
        "(with `--jobs N`, every process reads and checks ids; the parent writes; "
        "decode, digest, route, count, rules are divided)",
        shares, f"one process {sp['one_process_events_per_s']:,} ev/s; `--jobs 1` {one['events_per_s']:,} ev/s",
        f"ideal on N free cores: {ideal}{measured}")  # fmt: skip
    runs = len(j["runs"])
    add(f"Parallel backtest: alerts byte-identical between every run ({runs} runs of `--jobs` "
        f"{', '.join(map(str, j['by_jobs']))}; sha256 of each alerts file)",
        f"{j['alerts']:,} alerts; {'identical' if j['identical'] else 'DIFFERENT'}; summary counts "
        f"{'equal' if j['counts_equal'] else 'DIFFERENT'}", "`--jobs 1`", "-", "byte-identical",
        "met" if j["identical"] and j["counts_equal"] else "missed")  # fmt: skip


def table() -> str:
    """Markdown: the figures, each with its same-run baseline, ratio and goal."""
    rows: list[tuple[str, ...]] = []

    def add(what: str, figure: str, base: str, ratio: str, goal: str = "-", result: str = "-") -> None:
        rows.append((what, figure, base, ratio, goal, result))

    if (e := _load("engine")) is not None:
        rate = f"{e['backtest_events_per_s']:,} ev/s"
        add(f"Engine: `backtest`, default rules, {e['events']:,} events", rate,
            f"parse-only {e['parse_only_events_per_s']:,} ev/s", f"{e['ratio_vs_parse_only']}x", f">= {ENGINE_GOAL}x",
            _verdict(e["ratio_vs_parse_only"], ENGINE_GOAL))  # fmt: skip
        add("Engine: same, against `json.loads` alone", rate, f"json.loads {e['json_loads_events_per_s']:,} ev/s",
            f"{e['ratio_vs_json_loads']}x")  # fmt: skip
        t = e["tenths_events_per_s"]
        add("Cost vs log length: last tenth of the log", f"{t[-1]:,} ev/s", f"first tenth {t[0]:,} ev/s",
            f"{e['last_vs_first_tenth']}x", "~1x (no slowdown)", _verdict(e["last_vs_first_tenth"], 0.9))  # fmt: skip
        # The first tenth starts from empty state (the generated log spans a year; the longest window
        # is 30 days): the second tenth is the first one with the state at its steady size.
        second = ratio(t[-1], t[1])
        add("Cost vs log length: last tenth, against the second (state at its steady size)", f"{t[-1]:,} ev/s",
            f"second tenth {t[1]:,} ev/s", f"{second}x", "~1x (no slowdown)", _verdict(second, 0.9))  # fmt: skip
    if (r := _load("rules")) is not None:
        for row in r["rows"]:
            add(f"Cost vs rules: {row['rules']} rule(s), {r['events']:,} events", f"{row['events_per_s']:,} ev/s",
                f"parse-only {r['parse_only_events_per_s']:,} ev/s; 1 rule",
                f"{row['ratio_vs_parse_only']}x; {row['ratio_vs_1_rule']}x")  # fmt: skip
    if (c := _load("compiled")) is not None:
        what = "Engine compiled with mypyc (a probe, not shipped: `bench/compiled.py`)"
        if "skipped" in c:
            add(what, "not run", c["skipped"], "-")
        else:
            tests = c["tests_on_compiled"]
            add(f"{what}: `backtest`, {c['events']:,} events, source of the fixed commit `BASE` in bench/compiled.py; "
                f"engine tests on the compiled copy: {tests['summary']}", f"{c['compiled_events_per_s']:,} ev/s",
                f"pure Python, same source {c['pure_events_per_s']:,} ev/s; "
                f"parse-only {c['parse_only_events_per_s']:,} ev/s",
                f"{c['compiled_vs_pure']}x pure; {c['compiled_vs_parse_only']}x parse-only "
                f"(pure {c['pure_vs_parse_only']}x)", f">= {ENGINE_GOAL}x parse-only",
                _verdict(c["compiled_vs_parse_only"], ENGINE_GOAL))  # fmt: skip
    if (j := _load("jobs")) is not None:
        _jobs_rows(j, add)
    if (lv := _load("live")) is not None:
        v = lv["variants"]
        shipped, trivial = v["worker as shipped"], v["trivial agent, same settings as shipped"]
        worker_rate = f"{shipped['events_per_s']:,} ev/s"
        add(f"Live worker (as shipped), {lv['events']:,} events",
            worker_rate + _cpu(shipped.get("cpu"), shipped["events_per_s"]),
            f"trivial Faust agent {trivial['events_per_s']:,} ev/s" + _cpu(trivial.get("cpu"), trivial["events_per_s"]),
            f"{lv['worker_vs_trivial_same_settings']}x",
            f">= {LIVE_GOAL}x", _verdict(lv["worker_vs_trivial_same_settings"], LIVE_GOAL))  # fmt: skip
        add("Live worker against the trivial agent on Faust defaults", worker_rate,
            f"trivial agent {v['trivial agent, Faust defaults']['events_per_s']:,} ev/s",
            f"{lv['worker_vs_trivial_faust_defaults']}x")  # fmt: skip
        if "local_evaluation_gain" in lv:
            plain = v["worker as shipped, without local evaluation"]
            add("Live worker without local evaluation (every event through the keyed topic)",
                f"{plain['events_per_s']:,} ev/s", f"trivial agent {trivial['events_per_s']:,} ev/s; as shipped",
                f"{lv['worker_without_local_evaluation_vs_trivial']}x; "
                f"shipped {lv['local_evaluation_gain']}x it")  # fmt: skip
        add("Transport limit (context): raw aiokafka read", f"{lv['raw_aiokafka_records_per_s']:,} rec/s",
            f"trivial agent {trivial['events_per_s']:,} ev/s",
            f"agent {lv['trivial_vs_raw_aiokafka']}x, worker {lv['worker_vs_raw_aiokafka']}x of raw")  # fmt: skip
    if (s := _load("scaleout")) is not None:
        cpu = s.get("cpu") or {}
        one_rate = s["one_worker_events_per_s"]
        one = f"1 worker {one_rate:,} ev/s" + _cpu(cpu.get("1 worker"), one_rate)
        add("Scale-out: 2 worker processes, 4 partitions",
            f"{s['two_workers_events_per_s']:,} ev/s" + _cpu(cpu.get("2 workers"), s["two_workers_events_per_s"]),
            one, f"{s['ratio_two_vs_one']}x", ">= 1.6x", _verdict(s["ratio_two_vs_one"], 1.6))  # fmt: skip
        if "ratio_two_standby_vs_one" in s:
            two_sb = s["two_workers_standby_events_per_s"]
            add("Scale-out: same, with standby replicas (`standby_replicas: 1`, Faust's default)",
                f"{two_sb:,} ev/s" + _cpu(cpu.get("2 workers, standby_replicas=1"), two_sb), one,
                f"{s['ratio_two_standby_vs_one']}x; {s['standby_cost_two_workers']}x as shipped")  # fmt: skip
        if "bundles_gain_two_workers" in s:
            two_nb = s["two_workers_no_bundles_events_per_s"]
            add("Scale-out: same, keyed records sent one by one (`bundle_keyed_records: false`)",
                f"{two_nb:,} ev/s" + _cpu(cpu.get("2 workers, without bundles"), two_nb), one,
                f"{s['ratio_two_no_bundles_vs_one']}x; as shipped {s['bundles_gain_two_workers']}x it")  # fmt: skip
        if "ratio_two_vs_one_no_local" in s:
            one_nl, two_nl = s["one_worker_no_local_events_per_s"], s["two_workers_no_local_events_per_s"]
            add("Scale-out: same, both without local evaluation",
                f"{two_nl:,} ev/s" + _cpu(cpu.get("2 workers, without local evaluation"), two_nl),
                f"1 worker without {one_nl:,} ev/s" + _cpu(cpu.get("1 worker, without local evaluation"), one_nl),
                f"{s['ratio_two_vs_one_no_local']}x")  # fmt: skip
    if (fo := _load("failover")) is not None:
        took = fo["failover_s"]
        keys = sorted({sum(r["state_keys_before"]) for rs in fo["runs"].values() for r in rs})
        entries = f"{keys[0]:,}" if len(keys) == 1 else f"{keys[0]:,}-{keys[-1]:,}"
        what = (f"Failover: 1 of 2 workers stopped, holding the state of {fo['events']:,} events "
                f"({entries} rule-key entries between them)")
        if "as shipped" in took:  # runs since 30 Nov 2026 16:00 (``streams.live.faust_ext.store``)
            add(what, f"as shipped {took['as shipped']} s to the survivor's first records"
                + _state_read(fo, "as shipped"),
                f"Faust's in-memory store {took['faust_memory_store']} s" + _state_read(fo, "faust_memory_store"),
                f"{fo['ratio_shipped_vs_faust_store']}x")  # fmt: skip
            if "join_paused_s" in fo:
                paused, read = fo["join_paused_s"], fo["join_state_read_s"]
                starts = fo["join_partitions_read_from_start"]

                def joined(name: str) -> str:
                    counts = "/".join(map(str, sorted(set(starts[name]))))
                    kept = "/".join(map(str, sorted({len(r.get("active_read_from_offset", {}))
                                                      for r in fo["join_runs"][name]})))  # fmt: skip
                    return (f"{paused[name]} s (state read back in {read[name]} s; of the {kept} partitions it "
                            f"kept, {counts} read from the changelog's start)")

                add("Join: a second worker joins one holding the state of the same events: the first worker's "
                    "streams stand still for its recovery", "as shipped " + joined("as shipped"),
                    "Faust's in-memory store " + joined("faust_memory_store"),
                    f"{fo['ratio_join_paused_shipped_vs_faust_store']}x")  # fmt: skip
            add("Failover: same, with standby replicas (`standby_replicas: 1`)",
                f"{took['standby_replicas=1']} s" + _state_read(fo, "standby_replicas=1"),
                f"as shipped {took['as shipped']} s", f"{fo['ratio_standby_vs_none']}x")  # fmt: skip
        else:
            add(what, f"with standby replicas {took['standby_replicas=1']} s to the survivor's first records"
                + _state_read(fo, "standby_replicas=1"),
                f"without {took['standby_replicas=0']} s" + _state_read(fo, "standby_replicas=0"),
                f"{fo['ratio_standby_vs_none']}x")  # fmt: skip
    if (lat := _load("latency")) is not None:
        for la in lat["runs"]:
            d, b = la["detection"], la["transport_baseline"]
            late = f"> {la['waited_after_last_send_s']:g} s after the last send"
            p50 = f"{d['p50_ms']} ms" if d["p50_ms"] is not None else late
            p99 = f"{d['p99_ms']} ms" if d["p99_ms"] is not None else late
            caught_up = d["p99_ms"] is not None
            baseline = "input"  # runs before 2026-11-29 23:30 read the input topic back, and lack the broker's ack
            if (acked := la.get("detection_from_broker_ack")) is not None:
                baseline = "echo"
                p99 += f" (from the broker's ack: p50 {_ms(acked['p50_ms'])}, p99 {_ms(acked['p99_ms'])})"
            add(f"Detection latency, worker {la['variant']}, {la['achieved_rate']:,} ev/s offered "
                f"({la['alerts_matched']}/{la['pairs']} "
                f"pairs alerted; worker processed {la['events_processed_by_worker']:,}/{la['events_sent']:,} events"
                f"{_changelog(la)}{_latency_cpu(la)})",
                f"p50 {p50}, p99 {p99}", f"{baseline} topic read-back p50 {_ms(b['p50_ms'])}, p99 {_ms(b['p99_ms'])}",
                _latency_ratio(la) if caught_up else "-", "p99 <= 250 ms",
                _verdict(d["p99_ms"], 250, False) if caught_up else "missed (fell behind)")  # fmt: skip
    if (m := _load("memory")) is not None:
        add(f"Memory: {m['active_keys']:,} active keys ({m['events']:,} distinct actors)",
            f"{m['bytes_per_active_key']:,} B/key RSS",
            f"RSS before {_mib(m['rss_baseline_bytes'])}, loaded {_mib(m['rss_loaded_bytes'])}",
            f"{m['bytes_per_active_key'] / 1024:.2f} KiB/key", "<= 1 KiB/key",
            _verdict(m["bytes_per_active_key"], 1024, False))  # fmt: skip
        add("Memory after every window expired", f"RSS {_mib(m['rss_after_expiry_bytes'])}, "
            f"{m['keys_after_expiry']} keys", "loaded minus baseline RSS",
            f"{m['retained_after_expiry_ratio']}x retained (objects: {m['retained_blocks_ratio']}x)",
            "back to baseline (0x)", "met" if m["retained_after_expiry_ratio"] <= 0.1 else "missed")  # fmt: skip
    if (rc := _load("recovery")) is not None:
        base = rc["rows"][0]
        base_text = f"{base['events']:,} events: {base['start_to_first_record_s']} s"
        for row in rc["rows"][1:]:
            add(f"Recovery: restart holding the state of {row['events']:,} events "
                f"({row['state_keys_before']:,} rule-key entries; {row['state_keys_after_restart']:,} after)",
                f"{row['start_to_first_record_s']} s to first record",
                base_text, f"{row['ratio_vs_smallest']}x")  # fmt: skip
    head = "| benchmark | figure | baseline (same run) | ratio | goal | result |\n|---|---|---|---|---|---|\n"
    return head + "".join("| " + " | ".join(row) + " |\n" for row in rows)


def tunings_table() -> str:
    lv = _load("live")
    if lv is None:
        return ""
    out = "| worker variant | events/s (median) | vs worker on Faust defaults |\n|---|---|---|\n"
    for name, v in lv["variants"].items():
        out += f"| {name} | {v['events_per_s']:,} | {v['ratio_vs_untuned_worker']}x |\n"
    return out


def machine_line(dated: bool = True) -> str:
    info = _load("machine") or machine()
    when = f" ({info['date']})" if dated else ""
    return (f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, {info['platform']}; "
            f"load average {info['load_1min_at_start']} when the last invocation began{when}.")  # fmt: skip


def write_readme() -> None:
    """The table under "Current figures" in bench/README.md, between its markers. Without the date:
    a document says what is true now, and the git log says when."""
    readme = REPO / "bench" / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"bench/README.md has no {BEGIN} ... {END} markers")
    tunings = f"Faust tunings, one at a time:\n\n{tunings_table()}"
    block = f"{BEGIN}\n{machine_line(dated=False)}\n\n{table()}\n{tunings}{END}"
    start, end = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:start] + block + text[end:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_only:
        print(machine_line() + "\n\n" + table() + "\n" + tunings_table())
        if args.readme:
            write_readme()
        return 0
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    write_result("machine", machine())
    with tempfile.TemporaryDirectory(prefix="modwatch-bench-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in chosen:
            started = time.perf_counter()
            log(f"== {name}")
            result = run_section(name, args, workdir)
            result["section_seconds"] = round(time.perf_counter() - started, 1)
            result["measured_at"] = machine()["date"]
            result["load_1min_after"] = round(os.getloadavg()[0], 2)
            if name == "profile":
                (RESULTS / "profile.txt").write_text(result.pop("text"))
            path = write_result(name, result)
            log(f"== {name} done in {result['section_seconds']} s -> {path.relative_to(REPO)}")
    print(machine_line() + "\n\n" + table() + "\n" + tunings_table())
    if args.readme:
        write_readme()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
