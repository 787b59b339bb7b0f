"""The engine compiled with mypyc: a measured probe of what compiling the same source gives. Not shipped.

Issue #6 asks for ``backtest`` at >= 0.5x parse-only; the pure-Python engine runs at ~0.1x. One way
past that would be a compiled engine. This section measures the cheapest form of one: the engine's
own modules, unchanged in logic, compiled with mypyc (part of mypy, already a test dependency).

mypyc needs a few changes to the source first, kept in ``bench/mypyc.patch`` against commit ``BASE``
(the probe builds from that commit, so that the patch keeps applying as the code moves on):

- every pydantic config model moves out of the rule modules to a new, uncompiled
  ``streams/rules/configs.py`` (mypyc cannot compile a module that defines one: it type-checks the
  ``Field(...)`` defaults), imported back under the same names;
- rule kinds are registered by a call after the class instead of the ``@register`` decorator (a
  decorated class is not compiled as a native class);
- ``decode`` keeps ``json.loads``' result in a variable typed ``Any`` (compiled, the variable's type
  ``dict | None`` is enforced, and a record that is valid JSON but not an object raised TypeError
  instead of being rejected);
- ``Engine`` allows interpreted subclasses (``explain`` subclasses it).

The section extracts ``BASE``'s tree twice with ``git archive`` (one copy pure, one patched and
compiled), times ``run_backtest`` of the same generated log
in each, in interleaved rounds in fresh interpreters, and parse-only in between. It then runs the
engine's tests against the compiled copy and records which fail. It needs git, a C compiler and
Python's headers; without them it records why it did not run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from .common import REPO, log, median, ratio
from .engine import ensure_log, parse_only

BASE = "4cb3ca4"  # the commit bench/mypyc.patch applies to
PATCH = REPO / "bench" / "mypyc.patch"
MODULES = (
    "streams/engine.py", "streams/decode.py", "streams/alerts.py", "streams/regions.py", "streams/backtest.py",
    "streams/logio.py", "streams/rules/base.py", "streams/rules/predicate.py", "streams/rules/sequence.py",
    "streams/rules/threshold.py", "streams/rules/absence.py", "streams/rules/cardinality.py",
    "streams/rules/duration.py", "streams/rules/match.py",
)  # fmt: skip
TESTS = (
    "tests/test_engine.py", "tests/rules", "tests/test_rule_fixtures.py", "tests/test_rules_reference.py",
    "tests/test_backtest.py", "tests/test_config.py", "tests/test_pipeline.py", "tests/test_explain.py",
    "tests/test_decode.py", "tests/test_hostile_input.py",
)  # fmt: skip

# Run in a fresh interpreter whose working directory is one of the copies: ``-c`` puts that
# directory first on sys.path, so its ``streams`` is the one imported.
_TIMED = """
import io, json, sys
from pathlib import Path
import streams.engine, streams.rules.sequence
from streams.backtest import run_backtest
from streams.config import load_rules
result = run_backtest([sys.argv[1]], load_rules(Path("config")), output=io.StringIO())
print(json.dumps({"events_per_s": result.read / result.elapsed, "alerts": len(result.alerts),
                  "modules": [streams.engine.__file__, streams.rules.sequence.__file__]}))
"""


def _extract(archive: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")


def _timed(tree: Path, log_path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _TIMED, str(log_path)], cwd=tree, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


_TESTED = """
import sys
import pytest
import streams.engine
assert streams.engine.__file__.endswith(".so"), streams.engine.__file__  # imported before the tests
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-rf", *sys.argv[1:]]))
"""


def _tests(tree: Path) -> dict[str, Any]:
    """The engine's tests against the compiled copy: the summary line and the ids of those that failed."""
    proc = subprocess.run([sys.executable, "-c", _TESTED, *TESTS], cwd=tree, capture_output=True, text=True)
    failed = sorted({line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")})
    summary = next((line for line in reversed(proc.stdout.splitlines()) if " in " in line), "")
    if not summary:
        raise RuntimeError(f"the tests did not run on the compiled copy:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return {"summary": summary.strip("= "), "failed": failed}


def probe(workdir: Path, events: int, rounds: int) -> dict[str, Any]:
    log_path = ensure_log(workdir / f"log-{events}.jsonl", events)
    if shutil.which("git") is None or subprocess.run(["git", "cat-file", "-e", f"{BASE}^{{commit}}"], cwd=REPO,
                                                     capture_output=True).returncode != 0:  # fmt: skip
        return {"skipped": f"needs git and the project's history (commit {BASE}; a shallow clone lacks it)"}
    with tempfile.TemporaryDirectory(prefix="modwatch-mypyc-") as tmp:
        pure, compiled = Path(tmp) / "pure", Path(tmp) / "compiled"
        archive = subprocess.run(["git", "archive", BASE], cwd=REPO, check=True, capture_output=True).stdout
        for tree in (pure, compiled):
            tree.mkdir()
            _extract(archive, tree)
        subprocess.run(["git", "apply", str(PATCH)], cwd=compiled, check=True, capture_output=True)
        log(f"compiled: mypyc of {len(MODULES)} modules at {BASE} (about a minute)")
        build = subprocess.run([sys.executable, "-m", "mypyc", *MODULES], cwd=compiled, capture_output=True,
                               text=True)  # fmt: skip
        if build.returncode != 0:
            tail = (build.stdout + build.stderr).strip().splitlines()[-5:]
            return {"skipped": "mypyc failed: " + " | ".join(tail)}
        runs: dict[str, list[dict[str, Any]]] = {"pure": [], "compiled": []}
        parse: list[float] = []
        for index in range(rounds):
            order = ("pure", "compiled") if index % 2 == 0 else ("compiled", "pure")
            for name in order:
                log(f"compiled: round {index + 1}/{rounds}, {name} backtest of {events:,} events")
                runs[name].append(_timed(pure if name == "pure" else compiled, log_path))
            parse.append(parse_only(log_path)[1])
        for name in runs:
            loaded = runs[name][0]["modules"]
            if any(m.endswith(".so") for m in loaded) != (name == "compiled"):
                raise RuntimeError(f"the {name} copy imported {loaded}")
        log("compiled: the engine's tests against the compiled copy")
        tests = _tests(compiled)
    pure_rate = median([r["events_per_s"] for r in runs["pure"]])
    compiled_rate = median([r["events_per_s"] for r in runs["compiled"]])
    parse_rate = median(parse)
    return {
        "base_commit": BASE,
        "events": events,
        "rounds": rounds,
        "modules": list(MODULES),
        "pure_events_per_s": round(pure_rate),
        "compiled_events_per_s": round(compiled_rate),
        "pure_runs": [round(r["events_per_s"]) for r in runs["pure"]],
        "compiled_runs": [round(r["events_per_s"]) for r in runs["compiled"]],
        "alerts": {name: sorted({r["alerts"] for r in rs}) for name, rs in runs.items()},
        "parse_only_events_per_s": round(parse_rate),
        "compiled_vs_pure": ratio(compiled_rate, pure_rate),
        "pure_vs_parse_only": ratio(pure_rate, parse_rate),
        "compiled_vs_parse_only": ratio(compiled_rate, parse_rate),
        "tests_on_compiled": tests,
    }
