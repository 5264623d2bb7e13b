"""Word count with in-mapper combining: one partial count per word per split.

The idiom of Lin and Dyer's "Data-Intensive Text Processing with MapReduce"
(section 3.1), Hadoop's setup/cleanup and Spark's mapPartitions: instead of a
``mapper`` called once per line, a ``split_mapper`` gets an iterator over all
the lines of its split, counts words in a dict as it reads, and emits each
word once at the end. Far fewer pairs reach the shuffle than with
``examples/wordcount.py``, and no combiner is needed on the map side (the
reducer still adds the partial counts of every split).

Run it as a job file on any text files::

    zmqmr run examples/wordcount_inmapper.py examples/data/gutenberg/*.txt -r 4

or as a script on an embedded cluster (default inputs: the sample books),
which also checks the cluster's answer against ``zmqmr.run_serial``::

    python examples/wordcount_inmapper.py [-r R] [FILE ...]
"""

import re
from collections import Counter

import zmqmr

WORD = re.compile(r"[a-z]+")


def split_mapper(records):
    counts = Counter()
    for _key, line in records:  # key is (path, byte offset)
        counts.update(WORD.findall(line.lower()))
        zmqmr.increment("lines")
    return counts.items()


def reducer(word, counts):
    return sum(counts)


if __name__ == "__main__":
    import argparse
    import glob
    import os
    import sys

    books = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gutenberg")
    default_inputs = sorted(glob.glob(os.path.join(books, "*.txt")))
    parser = argparse.ArgumentParser(description="Count words with in-mapper combining.")
    parser.add_argument("inputs", nargs="*", help="text files (default: the sample books)")
    parser.add_argument("-r", "--reducers", type=int, default=2, help="reduce tasks")
    args = parser.parse_args()
    inputs = args.inputs or default_inputs
    if not inputs:
        sys.exit(f"no inputs given and no books found under {books}")

    job = zmqmr.Job(split_mapper=split_mapper, reducer=reducer, inputs=inputs)
    job.num_reducers = args.reducers
    with zmqmr.LocalCluster(workers=2) as cluster:
        result = list(cluster.client().run(job).items())
    serial = list(zmqmr.run_serial(job).items())
    agree = result == serial
    print(f"cluster and run_serial agree: {agree} ({len(result)} distinct words)")
    for word, count in sorted(result, key=lambda kv: (-kv[1], kv[0]))[:10]:
        print(f"{count:>8}  {word}")
    sys.exit(0 if agree else 1)
