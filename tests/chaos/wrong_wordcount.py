"""A deliberately wrong job for testing the checker: right in run_serial, wrong on a cluster.

On a cluster, local or a lab, the job runs in executor processes, never in
the process that loaded this file: there the reducer adds one to every count
and the mapper bumps a counter the serial run does not have. In the checking
process (and in any process that loads the file and runs it serially) it is
an honest word count. ``LOADED_BY`` travels with the functions (cloudpickle
ships a job file's globals by value).
"""

import os
import re

import zmqmr

WORD = re.compile(r"[a-z]+")
LOADED_BY = os.getpid()


def on_the_cluster():
    return os.getpid() != LOADED_BY


def mapper(key, line):
    if on_the_cluster():
        zmqmr.increment("sneaky")
    for word in WORD.findall(line.lower()):
        yield word, 1


def reducer(word, counts):
    return sum(counts) + (1 if on_the_cluster() else 0)
