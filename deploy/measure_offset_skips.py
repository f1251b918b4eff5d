"""How often does the restarted worker's consumer skip offsets, per broker?

Runs a SIGKILL-restart integration test (the diarized mono call by default, or the stereo one;
SQLite) ``--runs`` times on each broker
and reads the workers' logs for what the delivery workarounds caught:

* ``skips``: records the consumer delivered past a hole (the offset guard held them back and
  sought back: "records skipped by the consumer");
* ``absent``: holes given up as absent after the guard's retries;
* ``seek_failed``: the post-recovery seek to the committed offsets failed.

A run also passes or fails (the stored windows equal offline analysis exactly). Writes JSON:

    python deploy/measure_offset_skips.py --runs 5 --out bench-results/offset_skips.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = "tests/processors/test_pipeline_stream.py"
TESTS = {
    "mono": f"{MODULE}::test_stream_diarized_mono_sigkill_restart_matches_offline",
    "stereo": f"{MODULE}::test_stream_sigkill_restart_matches_offline",
}
PATTERNS = {
    "skips": re.compile(r"records skipped by the consumer"),
    "absent": re.compile(r"taken as absent"),
    "seek_failed": re.compile(r"seek to committed offsets after recovery failed"),
}


def one_run(test: str, broker: str, base: Path) -> dict[str, object]:
    t0 = time.monotonic()
    base.parent.mkdir(parents=True, exist_ok=True)  # pytest creates only the last level
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={base}",
         f"{test}[sqlite-{broker}]"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    counts = dict.fromkeys(PATTERNS, 0)
    for log in {p.resolve() for p in base.rglob("worker*.log")}:  # pytest links "…current"
        text = log.read_text(errors="replace")
        for name, pattern in PATTERNS.items():
            counts[name] += len(pattern.findall(text))
    tail = done.stdout.strip().splitlines()[-1:] if done.stdout else []
    return {
        "broker": broker,
        "passed": done.returncode == 0,
        "seconds": round(time.monotonic() - t0, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **counts,
        "pytest": tail[0] if tail else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--test", choices=sorted(TESTS), default="mono")
    parser.add_argument("--brokers", nargs="+", default=["kafka", "tansu"])
    parser.add_argument("--out", type=Path, default=Path("bench-results/offset_skips.json"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/callsense-offset-skips"))
    args = parser.parse_args()
    from tqdm import tqdm

    runs = []
    jobs = [(b, i) for i in range(args.runs) for b in args.brokers]  # interleaved: same load
    for broker, i in tqdm(jobs, desc="restart runs", unit="run"):
        runs.append(one_run(TESTS[args.test], broker, args.workdir / f"{broker}-{i}"))
        tqdm.write(json.dumps(runs[-1]))
    summary = {
        b: {
            "runs": sum(r["broker"] == b for r in runs),
            "passed": sum(r["broker"] == b and r["passed"] for r in runs),
            "runs_with_skips": sum(r["broker"] == b and r["skips"] > 0 for r in runs),
            **{k: sum(r[k] for r in runs if r["broker"] == b) for k in PATTERNS},
        }
        for b in args.brokers
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"test": TESTS[args.test], "summary": summary, "runs": runs}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
