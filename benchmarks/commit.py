"""What the output commit costs: word count into an output_dir at growing R.

For each R, one job on a LocalCluster of 2 workers writes R part files; the
master's job commit (zmqmr.commit: R renames out of _temporary, _SUCCESS,
fsyncs) is timed by the job's own stats. Prints commit seconds, its share of
the job's wall time, and milliseconds per part file; checks every output dir
against run_serial (part files, _SUCCESS, no _temporary). A second run per R
with overwrite=True replaces the first output and is timed the same way.

    python benchmarks/commit.py [--reducers 8,64,256] [--books 2]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile

from faults import BOOKS, mapper, reducer  # word count on the sample books, as faults.py

import zmqmr
from zmqmr.chaos.checker import diff_output_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reducers", default="8,64,256", help="values of R, comma-separated")
    ap.add_argument("--books", type=int, default=2, help="books of the sample corpus to count")
    args = ap.parse_args()
    inputs = sorted(glob.glob(os.path.join(BOOKS, "*.txt")))[: args.books]
    rs = [int(r) for r in args.reducers.split(",")]
    problems = 0
    print(f"{'R':>5} {'run':<10} {'wall s':>8} {'commit s':>9} {'share':>7} {'ms/part':>8}")
    with tempfile.TemporaryDirectory() as tmp, zmqmr.LocalCluster(workers=2) as cluster:
        client = cluster.client()
        for r in rs:
            out = os.path.join(tmp, f"out-{r}")
            job = zmqmr.Job(mapper, reducer, inputs=inputs, num_reducers=r, combiner=reducer)
            expected = list(zmqmr.run_serial(job).items())
            job.output_dir = out
            for run in ("new", "overwrite"):
                job.overwrite = run == "overwrite"
                stats = client.run(job, progress=False).stats
                wall, commit = stats["total_seconds"], stats["commit_seconds"]
                print(
                    f"{r:>5} {run:<10} {wall:>8.2f} {commit:>9.3f} {commit / wall:>6.1%} "
                    f"{1000 * commit / r:>8.2f}"
                )
                found = diff_output_dir(out, expected, r)
                if found:
                    problems += 1
                    print(f"      output dir differs from run_serial: {'; '.join(found)}")
    print("answers: every output dir equals run_serial" if not problems else "answers: WRONG")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
