#!/usr/bin/env python3
"""Seeded fault run against a 3-node Sluice cluster: `scripts/fault-run.py --faults 50 --seed S`.

Starts three `sluice server` processes (every node broker+controller; in network namespaces when root and `ip netns`
work), a topic with RF 3 and min.insync.replicas=2, idempotent acks=all confluent-kafka producers, and injects
`--faults` faults one at a time (SIGKILL of a leader, a SIGSTOPped leader past its session, whole-cluster restarts,
a lagging follower, a leader cut off from the quorum and its followers), healing each before the next. Then it reads
everything back and compares the replicas. See tests/interop/python/fault_runner.py for the details, docs/faults.md
for a recorded run.

Prints the schedule (a pure function of the seed), a line per step, and a report table; writes the report and
`report.json` to the work directory (kept, with the node logs). Exit status 0 when every check passed.
Run it with the repository's venv: `.venv/bin/python scripts/fault-run.py ...`. The broker binary is
`$SLUICE_BIN`, else target/debug/sluice (copied into the work directory first).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "interop" / "python"))

from fault_runner import Runner, Settings, outcome_json, report  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=50, help="faults to inject (default 50)")
    parser.add_argument("--seed", type=int, default=None, help="schedule seed (default: random, printed)")
    parser.add_argument("--partitions", type=int, default=Settings.partitions)
    parser.add_argument("--producers", type=int, default=Settings.producers)
    parser.add_argument("--rate", type=float, default=Settings.rate, help="records/s per producer")
    parser.add_argument("--session-timeout-ms", type=int, default=Settings.session_timeout_ms)
    parser.add_argument("--replica-lag-time-max-ms", type=int, default=Settings.replica_lag_time_max_ms)
    parser.add_argument("--no-netns", action="store_true", help="loopback only (no cut-leader faults)")
    parser.add_argument("--kinds", default=None,
                        help="comma-separated fault kinds to draw from (default: all; the schedule depends on them)")
    parser.add_argument("--workdir", type=Path, default=None, help="where node data and logs go (kept)")
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"sluice-faults-{seed}-"))
    settings = Settings(partitions=args.partitions, producers=args.producers, rate=args.rate,
                        session_timeout_ms=args.session_timeout_ms,
                        replica_lag_time_max_ms=args.replica_lag_time_max_ms)
    started = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    print(f"seed {seed}, work directory {workdir}", flush=True)
    kinds = args.kinds.split(",") if args.kinds else None
    outcome = Runner(seed, args.faults, workdir, settings, use_netns=False if args.no_netns else None,
                     log=lambda line: print(line, flush=True), kinds=kinds).run()
    table = report(outcome, started)
    print("\n" + table)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "report.txt").write_text(table + "\n")
    (workdir / "report.json").write_text(json.dumps({"started": started, **outcome_json(outcome)}, indent=1))
    print(f"\nreport and node logs in {workdir}")
    if not outcome.ok:
        again = f"--faults {args.faults} --seed {seed}" + (f" --kinds {args.kinds}" if args.kinds else "")
        print(f"Reproduce with: .venv/bin/python scripts/fault-run.py {again}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
