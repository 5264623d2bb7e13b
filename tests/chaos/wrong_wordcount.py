"""A deliberately wrong job for testing the checker: right in run_serial, wrong on the cluster.

On a chaos cluster (where ZMQMR_CHAOS_NODE is set in every worker and executor)
the reducer adds one to every count and the mapper bumps a counter the serial
run does not have; in the checking process it is an honest word count.
"""

import os
import re

import zmqmr

WORD = re.compile(r"[a-z]+")


def on_the_cluster():
    return bool(os.environ.get("ZMQMR_CHAOS_NODE"))


def mapper(key, line):
    if on_the_cluster():
        zmqmr.increment("sneaky")
    for word in WORD.findall(line.lower()):
        yield word, 1


def reducer(word, counts):
    return sum(counts) + (1 if on_the_cluster() else 0)
