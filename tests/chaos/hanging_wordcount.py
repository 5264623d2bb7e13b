"""A job that never finishes on the cluster (its mapper sleeps for an hour there)."""

import os
import re
import time

WORD = re.compile(r"[a-z]+")


def mapper(key, line):
    if os.environ.get("ZMQMR_CHAOS_NODE"):
        time.sleep(3600)
    for word in WORD.findall(line.lower()):
        yield word, 1


def reducer(word, counts):
    return sum(counts)
