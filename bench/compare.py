"""``python -m bench.compare OLD NEW``: the detection latency of two checkouts, runs alternating.

The latency at 2,000 events/s moves a lot from run to run on these machines (p99 0.75-7 s over one
session's runs of the same code), so a change is judged by runs of both codes taken in turn: pair
``i`` runs OLD then NEW, pair ``i + 1`` NEW then OLD. Each run is ``bench.live.latency`` in a
process started in that checkout (its ``streams`` and ``bench`` are imported from there), with this
interpreter. Prints one line per run and writes them to ``bench/results/compare.json`` (``--name``
for another file, so as not to overwrite a committed result).

    python -m bench.compare /tmp/old-clone . --pairs 2 --rate 2000

``BENCH_GC_LOG=1`` in the environment makes each worker log its garbage collections of 10 ms or more
to its log file (``bench.worker_variant``): how the pauses behind the tail were found.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import log, median, write_result

RUN = """
import json, sys
from pathlib import Path
from bench.live import latency
r = latency(Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))
print(json.dumps({key: r[key] for key in ("detection", "transport_baseline", "events_sent",
                                           "events_processed_by_worker", "alerts_matched", "pairs")}))
"""


def run_once(checkout: Path, workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", RUN, str(workdir), str(rate), str(seconds)], cwd=checkout,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"latency run in {checkout} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _commit(checkout: Path) -> str | None:
    """The checkout's commit, marked ``+changes`` when its tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=checkout, check=False).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}+changes" if dirty else head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("old", type=Path, help="checkout of the code before the change")
    parser.add_argument("new", type=Path, help="checkout of the code after it")
    parser.add_argument("--pairs", type=int, default=2, help="runs of each checkout (default 2)")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s offered (default 2,000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run (default 60)")
    parser.add_argument("--name", default="compare",
                        help="write bench/results/NAME.json (default: compare)")
    args = parser.parse_args(argv)
    if not args.name or Path(args.name).name != args.name:
        parser.error(f"--name: {args.name!r} is not a plain file name")
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    for name, checkout in sides.items():
        if not (checkout / "bench" / "live.py").is_file():
            parser.error(f"{name}: {checkout} is not a modwatch checkout (no bench/live.py)")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="modwatch-compare-") as tmp:
        for pair in range(args.pairs):
            order = ["old", "new"] if pair % 2 == 0 else ["new", "old"]
            for name in order:
                log(f"compare: pair {pair + 1}/{args.pairs}, {name} ({sides[name]})")
                result = run_once(sides[name], Path(tmp) / f"{name}-{pair}", args.rate, args.seconds)
                det = result["detection"]
                runs.append({"side": name, "pair": pair + 1, **result})
                evaluated = f"{result['events_processed_by_worker']:,}/{result['events_sent']:,} events"
                alerted = f"{result['alerts_matched']}/{result['pairs']} pairs"
                times = f"p50 {det['p50_ms']} ms, p99 {det['p99_ms']} ms, max {det['max_ms']} ms"
                print(f"{name} pair {pair + 1}: {times}; {evaluated}, {alerted}", flush=True)
    p99 = {name: [r["detection"]["p99_ms"] for r in runs if r["side"] == name] for name in sides}
    summary = {name: {"p99_ms": values, "median_p99_ms": median([v for v in values if v is not None])}
               for name, values in p99.items()}  # fmt: skip
    checkouts = {name: {"path": str(path), "commit": _commit(path)} for name, path in sides.items()}
    write_result(args.name, {"rate": args.rate, "seconds": args.seconds, "checkouts": checkouts, "runs": runs,
                             "summary": summary})  # fmt: skip
    for name, values in summary.items():
        print(f"{name}: p99 {values['p99_ms']} ms, median {values['median_p99_ms']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
