"""Word count: how many times each word occurs in a set of text files.

The "hello world" of MapReduce (section 2.1 of the Google paper): the mapper
emits ``(word, 1)`` for every word of a line, the reducer adds the ones up.
The reducer doubles as the combiner, so each map task ships one partial sum
per word instead of one record per occurrence.

Run it as a job file on any text files::

    zmqmr run examples/wordcount.py examples/data/gutenberg/*.txt -r 4

or as a script on an embedded cluster (default inputs: the eight Project
Gutenberg books in examples/data/gutenberg), which also checks the
cluster's answer against ``zmqmr.run_serial``::

    python examples/wordcount.py [-r R] [FILE ...]
"""

import re

import zmqmr

# Compiled once at import; cloudpickle ships it to the workers with the mapper.
WORD = re.compile(r"[a-z]+")


def mapper(key, line):
    # key is (path, byte offset) and is not needed: a word counts the same anywhere.
    for word in WORD.findall(line.lower()):
        yield word, 1


def reducer(word, counts):
    return sum(counts)


# Addition is associative and commutative, so partial sums on the map side
# give the same answer whether the combiner runs zero, one or many times.
combiner = reducer


if __name__ == "__main__":
    import argparse
    import glob
    import os
    import sys

    # The sample corpus ships with the repository, next to this file.
    books = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gutenberg")
    default_inputs = sorted(glob.glob(os.path.join(books, "*.txt")))
    parser = argparse.ArgumentParser(description="Count words on a local zmqmr cluster.")
    parser.add_argument("inputs", nargs="*", help="text files (default: the sample books)")
    parser.add_argument("-r", "--reducers", type=int, default=2, help="reduce tasks")
    args = parser.parse_args()
    inputs = args.inputs or default_inputs
    if not inputs:
        sys.exit(f"no inputs given and no books found under {books}")

    job = zmqmr.Job(mapper, reducer, inputs, combiner=combiner, num_reducers=args.reducers)
    with zmqmr.LocalCluster(workers=2) as cluster:
        result = list(cluster.client().run(job).items())
    serial = list(zmqmr.run_serial(job).items())
    agree = result == serial
    print(f"cluster and run_serial agree: {agree} ({len(result)} distinct words)")

    for word, count in sorted(result, key=lambda kv: (-kv[1], kv[0]))[:10]:
        print(f"{count:>8}  {word}")
    sys.exit(0 if agree else 1)
