"""A job whose answer is not deterministic: the words of each first letter, in set order.

The order of a set of strings follows string hashing, which differs between
processes (PYTHONHASHSEED): two serial runs in two processes disagree, and
the chaos harness must say so instead of blaming the cluster.
"""

import re

WORD = re.compile(r"[a-z]+")
JOB = dict(num_reducers=2)


def mapper(key, line):
    for word in WORD.findall(line.lower()):
        yield word[0], word


def reducer(letter, words):
    return " ".join(set(words))
