"""Web-server log analysis: hits per status, per endpoint, and where 5xx errors happen.

Input lines are access-log lines in (roughly) Common Log Format::

    10.0.3.7 - - [12/Mar/2024:10:15:32 +0000] "GET /api/orders?id=3 HTTP/1.1" 200 512

The mapper emits a count of 1 under several keys per line, each a
``(kind, name)`` tuple so that all keys of the job are mutually orderable:
``("status", "404")``, ``("endpoint", "/api/orders")`` (query string dropped),
``("method", "GET")`` and, for server errors, ``("error_endpoint", path)``.
The reducer (and combiner) adds them up. Lines that do not parse are not
fatal: they are counted with the user counter ``weblog.malformed``.

Job file::

    zmqmr run examples/weblog.py logs/access.log* -r 4

Script: generates a seeded synthetic log into a temporary directory (removed
at the end), runs on an embedded cluster and checks against ``zmqmr.run_serial``::

    python examples/weblog.py [-r R] [FILE ...]
"""

import os
import random
import re

import zmqmr

# host ident user [time] "METHOD URL PROTOCOL" status bytes; captures method, URL, status.
LINE = re.compile(r'^\S+ \S+ \S+ \[[^\]]+\] "(\S+) (\S+)[^"]*" (\d{3}) (?:\d+|-)$')


def mapper(key, line):
    m = LINE.match(line)
    if m is None:
        # Real logs have junk (truncated writes, binary probes): count it, go on.
        zmqmr.increment("weblog.malformed")
        return
    method, url, status = m.groups()
    path = url.split("?", 1)[0]
    yield ("status", status), 1
    yield ("method", method), 1
    yield ("endpoint", path), 1
    if status.startswith("5"):
        yield ("error_endpoint", path), 1


def reducer(key, counts):
    return sum(counts)


combiner = reducer

# Endpoints with (weight, chance of a 5xx): /api/checkout is the flaky one.
ENDPOINTS = {
    "/": (30, 0.001),
    "/static/app.js": (25, 0.0),
    "/api/products": (20, 0.01),
    "/api/orders": (10, 0.02),
    "/api/checkout": (5, 0.15),
    "/login": (8, 0.005),
}


def generate(directory, lines=40_000, files=2, seed=3, malformed_every=997):
    """Write ``files`` access logs; return their paths (every Nth line is junk)."""
    rng = random.Random(seed)
    paths = []
    endpoints = list(ENDPOINTS)
    weights = [w for w, _ in ENDPOINTS.values()]
    i = 0
    for n in range(files):
        path = os.path.join(directory, f"access-{n}.log")
        with open(path, "w") as f:
            for _ in range(lines // files):
                i += 1
                if i % malformed_every == 0:
                    f.write("GET /\x7f garbage line\n")
                    continue
                endpoint = rng.choices(endpoints, weights)[0]
                if rng.random() < ENDPOINTS[endpoint][1]:
                    status = rng.choice(["500", "502", "503"])
                else:
                    status = rng.choices(["200", "304", "404", "401"], [85, 8, 5, 2])[0]
                method = "POST" if endpoint in ("/api/checkout", "/login") else "GET"
                query = f"?id={rng.randrange(1000)}" if endpoint == "/api/orders" else ""
                f.write(
                    f"10.0.{rng.randrange(8)}.{rng.randrange(256)} - - "
                    f"[12/Mar/2024:{rng.randrange(24):02d}:{rng.randrange(60):02d}:00 +0000] "
                    f'"{method} {endpoint}{query} HTTP/1.1" {status} {rng.randrange(100, 9000)}\n'
                )
        paths.append(path)
    return paths


if __name__ == "__main__":
    import argparse
    import sys
    import tempfile

    parser = argparse.ArgumentParser(description="Analyse access logs on a zmqmr cluster.")
    parser.add_argument("inputs", nargs="*", help="log files (default: a generated log)")
    parser.add_argument("-r", "--reducers", type=int, default=2, help="reduce tasks")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zmqmr-weblog-") as tmp:
        inputs = args.inputs or generate(tmp)
        job = zmqmr.Job(mapper, reducer, inputs, combiner=combiner, num_reducers=args.reducers)
        with zmqmr.LocalCluster(workers=2) as cluster:
            done = cluster.client().run(job)
            result = list(done.items())
        serial = zmqmr.run_serial(job)
    malformed = done.counters.get("weblog.malformed", 0)
    agree = result == list(serial.items()) and malformed == serial.counters.get(
        "weblog.malformed", 0
    )
    print(f"cluster and run_serial agree: {agree} ({malformed} malformed lines skipped)")

    # Group the (kind, name) keys back into one small table per kind.
    for kind in ("status", "method", "endpoint", "error_endpoint"):
        rows = sorted(((n, name) for (k, name), n in result if k == kind), reverse=True)
        print(f"{kind}:")
        for n, name in rows[:10]:
            print(f"  {n:>7}  {name}")
    sys.exit(0 if agree else 1)
