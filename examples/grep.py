"""Distributed grep: every line that matches a regular expression.

Section 2.3 of the Google paper: the mapper emits a line if it matches, the
reducer is the identity. Each output record is ``((file name, byte offset),
line)``, so the result comes back sorted by file and position in the file.

The pattern comes from the environment variable ``ZMQMR_GREP_PATTERN``
(default: monsters and fiends, which Frankenstein has plenty of), read once
when the file is imported. Job file::

    ZMQMR_GREP_PATTERN='(?i)\\bghost' zmqmr run examples/grep.py examples/data/gutenberg/*.txt

Script (embedded cluster, checked against ``zmqmr.run_serial``; default inputs:
the sample books in examples/data/gutenberg)::

    python examples/grep.py [-r R] [PATTERN [FILE ...]]
"""

import os
import re

import zmqmr

DEFAULT_PATTERN = r"(?i)\b(?:monster|fiend|demon|daemon)s?\b"

# Read at import, in the process that builds the job. The workers never import
# this file: cloudpickle ships the mapper *by value*, with this compiled regex
# among its globals, so the workers' environment does not matter.
PATTERN = re.compile(os.environ.get("ZMQMR_GREP_PATTERN", DEFAULT_PATTERN))


def mapper(key, line):
    path, offset = key
    if PATTERN.search(line):
        # The basename keeps output short; inputs must not share basenames,
        # or two lines could get the same key.
        yield (os.path.basename(path), offset), line


def reducer(key, lines):
    # Identity: a (file, offset) key names exactly one line.
    return next(lines)


if __name__ == "__main__":
    import argparse
    import glob
    import sys
    from collections import Counter

    # The sample corpus ships with the repository, next to this file.
    books = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gutenberg")
    default_inputs = sorted(glob.glob(os.path.join(books, "*.txt")))
    parser = argparse.ArgumentParser(description="Distributed grep on a local zmqmr cluster.")
    parser.add_argument("pattern", nargs="?", help=f"a Python regex (default {PATTERN.pattern})")
    parser.add_argument("inputs", nargs="*", help="text files (default: the sample books)")
    parser.add_argument("-r", "--reducers", type=int, default=2, help="reduce tasks")
    args = parser.parse_args()
    inputs = args.inputs or default_inputs
    if not inputs:
        sys.exit(f"no inputs given and no books found under {books}")
    if args.pattern:
        # Rebind the global before submitting: the mapper is pickled at submit,
        # with the globals it uses, so the workers get this regex.
        PATTERN = re.compile(args.pattern)

    job = zmqmr.Job(mapper, reducer, inputs, num_reducers=args.reducers)
    with zmqmr.LocalCluster(workers=2) as cluster:
        result = list(cluster.client().run(job).items())
    serial = list(zmqmr.run_serial(job).items())
    agree = result == serial
    print(f"cluster and run_serial agree: {agree} ({len(result)} lines match {PATTERN.pattern})")

    # Ordered by file: the default partitioner scatters keys over the reducers.
    per_file = Counter(name for (name, _), _ in result)
    for name, n in sorted(per_file.items()):
        print(f"{n:>6}  {name}")
    for (name, offset), line in sorted(result)[:10]:
        print(f"{name}:{offset}: {line.strip()}")
    sys.exit(0 if agree else 1)
