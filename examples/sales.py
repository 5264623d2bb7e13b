"""Sales report: revenue per (store, product) from CSV sales records.

Input lines are ``date,store,product,quantity,unit_price`` (a header line
starting with ``date,`` is skipped, so files may be concatenated exports). The
mapper emits ``((store, product), revenue)``, with revenue in integer cents so
that sums are exact whatever order the combiner and reducer add them in
(floats would make the cluster and ``run_serial`` disagree in the last digit).

Job file::

    zmqmr run examples/sales.py sales/*.csv -r 4

Script: generates seeded random sales into a temporary directory (removed at
the end), runs on an embedded cluster and checks against ``zmqmr.run_serial``::

    python examples/sales.py [-r R] [FILE ...]
"""

import datetime
import os
import random

import zmqmr


def cents(price):
    """'12.5' -> 1250, exactly (no float rounding)."""
    units, _, fraction = price.partition(".")
    return int(units) * 100 + int((fraction + "00")[:2])


def mapper(key, line):
    if not line or line.startswith("date,"):
        return  # blank or header line
    date, store, product, quantity, unit_price = line.split(",")
    yield (store, product), int(quantity) * cents(unit_price)


def reducer(key, revenues):
    return sum(revenues)


combiner = reducer  # integer sums: any grouping gives the same total

STORES = ["amsterdam", "berlin", "lisbon", "oslo", "rome", "vienna"]
PRICES = {"apples": 45, "bread": 260, "cheese": 899, "coffee": 1150, "milk": 119, "wine": 1475}


def generate(directory, rows=30_000, files=3, seed=7):
    """Write ``files`` CSV files of random sales; return their paths."""
    rng = random.Random(seed)
    start = datetime.date(2024, 1, 1)
    paths = []
    for n in range(files):
        path = os.path.join(directory, f"sales-{n}.csv")
        with open(path, "w") as f:
            f.write("date,store,product,quantity,unit_price\n")
            for _ in range(rows // files):
                product = rng.choice(list(PRICES))
                price = PRICES[product] - rng.choice([0, 0, 0, 5, 10])  # occasional discounts
                date = start + datetime.timedelta(days=rng.randrange(90))
                f.write(
                    f"{date},{rng.choice(STORES)},{product},{rng.randint(1, 12)},"
                    f"{price // 100}.{price % 100:02d}\n"
                )
        paths.append(path)
    return paths


if __name__ == "__main__":
    import argparse
    import sys
    import tempfile
    from collections import Counter

    parser = argparse.ArgumentParser(description="Revenue per store and product on zmqmr.")
    parser.add_argument("inputs", nargs="*", help="CSV files (default: generated sales)")
    parser.add_argument("-r", "--reducers", type=int, default=2, help="reduce tasks")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zmqmr-sales-") as tmp:
        inputs = args.inputs or generate(tmp)
        job = zmqmr.Job(mapper, reducer, inputs, combiner=combiner, num_reducers=args.reducers)
        with zmqmr.LocalCluster(workers=2) as cluster:
            result = list(cluster.client().run(job).items())
        serial = list(zmqmr.run_serial(job).items())
    agree = result == serial
    print(f"cluster and run_serial agree: {agree} ({len(result)} store/product pairs)")

    # The job's output is small, so the per-store roll-up happens in the client.
    per_store = Counter()
    for (store, _), revenue in result:
        per_store[store] += revenue
    print("revenue per store:")
    for store, revenue in per_store.most_common():
        print(f"  {store:<12} {revenue / 100:>12,.2f}")
    print("top 10 store/product pairs:")
    for (store, product), revenue in sorted(result, key=lambda kv: -kv[1])[:10]:
        print(f"  {store:<12} {product:<8} {revenue / 100:>12,.2f}")
    sys.exit(0 if agree else 1)
