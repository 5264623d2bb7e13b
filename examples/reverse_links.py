"""Reverse web-link graph: for each page, the sorted list of pages linking to it.

Section 2.3 of the Google paper: the mapper reads ``source<TAB>target target
...`` lines and emits ``(target, source)`` for each link; the reducer gathers
the sources of each target. No combiner: it would have to turn single page
names into lists, and a combiner's output must look like the mapper's values.

Job file, on files of such lines::

    zmqmr run examples/reverse_links.py links/*.tsv -r 4

Script: generates a seeded random graph of 2,000 pages into a temporary
directory (removed at the end), runs the job on an embedded cluster and checks
it against ``zmqmr.run_serial``::

    python examples/reverse_links.py [-r R] [FILE ...]
"""

import os
import random

import zmqmr


def mapper(key, line):
    source, _, targets = line.partition("\t")
    # dict.fromkeys: a page that links twice to a target is one backlink.
    for target in dict.fromkeys(targets.split()):
        yield target, source


def reducer(target, sources):
    return sorted(sources)


def generate(directory, pages=2000, files=4, seed=42):
    """Write a random link graph as ``files`` TSV files; return their paths."""
    rng = random.Random(seed)
    names = [f"page{i:05d}.html" for i in range(pages)]
    # Zipf-like popularity, as on the web: a few pages get most of the links.
    weights = [1 / (rank + 1) for rank in range(pages)]
    rng.shuffle(names)
    paths = []
    for n in range(files):
        path = os.path.join(directory, f"links-{n}.tsv")
        with open(path, "w") as f:
            for source in names[n::files]:
                targets = rng.choices(names, weights, k=rng.randint(0, 12))
                f.write(f"{source}\t{' '.join(targets)}\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    import argparse
    import sys
    import tempfile

    parser = argparse.ArgumentParser(description="Reverse a link graph on a zmqmr cluster.")
    parser.add_argument("inputs", nargs="*", help="link files (default: a generated graph)")
    parser.add_argument("-r", "--reducers", type=int, default=2, help="reduce tasks")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zmqmr-links-") as tmp:
        inputs = args.inputs or generate(tmp)
        job = zmqmr.Job(mapper, reducer, inputs, num_reducers=args.reducers)
        with zmqmr.LocalCluster(workers=2) as cluster:
            result = list(cluster.client().run(job).items())
        serial = list(zmqmr.run_serial(job).items())
    agree = result == serial
    print(f"cluster and run_serial agree: {agree} ({len(result)} pages have backlinks)")

    print("most linked-to pages:")
    for page, sources in sorted(result, key=lambda kv: (-len(kv[1]), kv[0]))[:10]:
        print(f"{len(sources):>6}  {page}  (e.g. from {', '.join(sources[:3])})")
    sys.exit(0 if agree else 1)
