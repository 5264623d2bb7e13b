"""Inverted index: for each word, the sorted list of files that contain it.

Section 2.3 of the Google paper ("inverted index"): the mapper emits
``(word, file)`` pairs, the reducer gathers the distinct files of each word.
Files are named by their basename.

Values are tuples of file names rather than single names so that a combiner
can merge them: a combiner's output is fed back to the reducer (and maybe to
the combiner again) as ordinary values, so it must have the same shape as the
mapper's values. The combiner turns many ``("a.txt",)`` values into one
``("a.txt", "b.txt")``, which cuts the shuffle from one record per word
occurrence to one per word per map task.

Job file::

    zmqmr run examples/inverted_index.py examples/data/gutenberg/*.txt -r 4

Script (embedded cluster, checked against ``zmqmr.run_serial``; default inputs:
the sample books in examples/data/gutenberg)::

    python examples/inverted_index.py [-r R] [FILE ...]
"""

import os
import re

import zmqmr

WORD = re.compile(r"[a-z]+")


def mapper(key, line):
    name = os.path.basename(key[0])
    # A set: a word twice on one line still names the file once.
    for word in set(WORD.findall(line.lower())):
        yield word, (name,)


def combiner(word, names):
    # Same shape in and out: a sorted tuple of distinct names.
    return tuple(sorted(set().union(*names)))


def reducer(word, names):
    return sorted(set().union(*names))


if __name__ == "__main__":
    import argparse
    import glob
    import sys

    # The sample corpus ships with the repository, next to this file.
    books = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gutenberg")
    default_inputs = sorted(glob.glob(os.path.join(books, "*.txt")))
    parser = argparse.ArgumentParser(description="Build an inverted index on a zmqmr cluster.")
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

    index = dict(result)
    everywhere = sum(1 for names in index.values() if len(names) == len(inputs))
    print(f"{everywhere} words occur in all {len(inputs)} files")
    # Words found in exactly one file, longest first: what makes each book its own.
    unique = sorted(
        (w for w, names in index.items() if len(names) == 1), key=lambda w: (-len(w), w)
    )
    for word in unique[:10]:
        print(f"  {word:<24} only in {index[word][0]}")
    for word in ("monster", "raft", "gregor"):
        print(f"  {word!r} is in {index.get(word, [])}")
    sys.exit(0 if agree else 1)
