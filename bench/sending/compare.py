"""Run a sending benchmark on a baseline commit and on this tree in the same run, and print the ratio.

    python bench/sending/compare.py BASE_REF drain [--rounds 2] [bench_sending.py options]

The baseline is checked out into a temporary git worktree (sharing this tree's .venv) and the two
trees take turns (base, this, base, this…) on the same machine, database and Redis, so load on a
shared machine falls on both. Prints each round's figures and the medians' ratio (this / base).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("emails_per_minute", "worker_cpu_ms_per_email", "single_per_second", "batch_per_second")


def run_bench(tree: Path, scenario: str, extra: list[str]) -> dict[str, object]:
    command = [str(ROOT / ".venv/bin/python"), "bench/sending/bench_sending.py", scenario, *extra]
    result = subprocess.run(command, cwd=tree, check=True, capture_output=True, text=True)
    output = result.stdout
    figures: dict[str, object] = json.loads(output[output.index("{\n") :])
    section = figures.get(scenario)
    assert isinstance(section, dict), output
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_ref", help="the baseline commit, e.g. 7be7425 or main~3")
    parser.add_argument("scenario", choices=["drain", "paced", "enqueue"])
    parser.add_argument("--rounds", type=int, default=2)
    args, extra = parser.parse_known_args()  # the rest goes to bench_sending.py
    extra = [a for a in extra if a != "--"]
    with tempfile.TemporaryDirectory(prefix="oree-bench-base-") as scratch:
        base = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base_ref], cwd=ROOT, check=True)
        try:
            runs: dict[str, list[dict[str, object]]] = {"base": [], "this": []}
            for round_number in range(1, args.rounds + 1):
                for name, tree in (("base", base), ("this", ROOT)):
                    figures = run_bench(tree, args.scenario, extra)
                    runs[name].append(figures)
                    print(f"round {round_number} {name}: {json.dumps(figures)}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    for key in FIGURES:
        values = {name: [float(r[key]) for r in rs if isinstance(r.get(key), int | float)] for name, rs in runs.items()}  # type: ignore[arg-type]
        if values["base"] and values["this"]:
            base_median, this_median = statistics.median(values["base"]), statistics.median(values["this"])
            ratio = this_median / base_median if base_median else float("nan")
            print(f"{key}: base {base_median:g} -> this {this_median:g} (x{ratio:.2f})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
