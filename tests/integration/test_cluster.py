"""Jobs on a LocalCluster of real processes, each compared with run_serial."""

from __future__ import annotations

import functools
import os
import threading

import pytest
from conftest import count_words, wc_mapper, wc_reducer

import zmqmr


@pytest.fixture(scope="module", params=[1, 2, 4], ids=lambda n: f"{n}workers")
def cluster(request):
    with zmqmr.LocalCluster(workers=request.param, heartbeat_interval=0.2, worker_timeout=3) as c:
        yield c


@functools.cache
def serial_items(job_key):
    return list(zmqmr.run_serial(_jobs[job_key]).items())


_jobs: dict = {}


@pytest.mark.parametrize("reducers", [1, 3, 10])
def test_wordcount_on_books_equals_serial_run(cluster, books, reducers):
    job = zmqmr.Job(
        mapper=wc_mapper,
        reducer=wc_reducer,
        combiner=wc_reducer,
        inputs=books,
        num_reducers=reducers,
        split_size=256 * 1024,
    )
    _jobs[("wc", reducers)] = job
    result = cluster.client().run(job)
    items = list(result.items())
    assert items == serial_items(("wc", reducers))
    assert dict(items) == count_words(books)
    assert result.stats["maps"] > len(books)  # the books were cut into several splits
    assert result.stats["reduces"] == reducers


def test_partitions_come_back_in_order_sorted_within_each(cluster, books):
    job = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:2], num_reducers=5, combiner=wc_reducer)
    items = list(cluster.client().run(job).items())
    parts = [zmqmr.default_partitioner(k, 5) for k, _ in items]
    assert parts == sorted(parts)
    for p in range(5):
        keys = [k for k, _ in items if zmqmr.default_partitioner(k, 5) == p]
        assert keys == sorted(keys)


def parity_partitioner(key, n):
    return key % n


def test_in_memory_records_with_custom_partitioner_and_counters(cluster):
    records = [(i, i * i) for i in range(5000)]

    def mapper(key, value):
        zmqmr.increment("seen")
        if value % 3 == 0:
            zmqmr.increment("multiples_of_three")
        yield key % 7, value

    def reducer(key, values):
        zmqmr.increment("groups")
        return sum(values)

    job = zmqmr.Job(mapper, reducer, inputs=records, num_reducers=2, partitioner=parity_partitioner)
    result = cluster.client().run(job)
    serial = zmqmr.run_serial(job)
    assert list(result.items()) == list(serial.items())
    assert [k for k, _ in result.items()] == [0, 2, 4, 6, 1, 3, 5]
    expected = {k: sum(i * i for i in range(5000) if i % 7 == k) for k in range(7)}
    assert dict(result.items()) == expected
    assert result.counters["seen"] == 5000
    assert result.counters["multiples_of_three"] == sum(1 for i in range(5000) if (i * i) % 3 == 0)
    assert result.counters["groups"] == 7
    for name in ("seen", "multiples_of_three", "groups"):
        assert result.counters[name] == serial.counters[name]


def test_whole_files_input_gives_one_record_per_file(cluster, books):
    def mapper(path, text):
        yield os.path.basename(path), len(text.splitlines())

    job = zmqmr.Job(mapper, lambda k, vs: sum(vs), inputs=zmqmr.WholeFiles(books), num_reducers=2)
    got = dict(cluster.client().run(job).items())
    expected = {}
    for p in books:
        with open(p, encoding="utf-8", errors="surrogateescape") as f:
            expected[os.path.basename(p)] = len(f.read().splitlines())
    assert got == expected


def split_words(key, line):
    for word in line.split():
        yield word, 1


def test_bytes_that_are_not_utf8_come_out_in_the_part_files_as_they_went_in(cluster, tmp_path):
    raw = ["caf\xe9 na\xefve caf\xe9".encode("latin-1"), b"\xff\xfe ok", "déjà ok".encode()]
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"\n".join(raw) + b"\n")
    out = tmp_path / "out"
    job = zmqmr.Job(split_words, wc_reducer, inputs=[str(path)], output_dir=out)
    result = cluster.client().run(job)
    assert list(result.items()) == list(zmqmr.run_serial(job).items())
    expected: dict[bytes, int] = {}
    for line in raw:
        for word in line.split():
            expected[word] = expected.get(word, 0) + 1
    written = (out / "part-00000").read_bytes().splitlines()
    assert written == [b"%s\t%d" % (w, n) for w, n in sorted(expected.items(), key=lambda kv:
                       kv[0].decode("utf-8", "surrogateescape"))]  # fmt: skip
    assert dict(result.items())["caf\udce9"] == 2  # the byte 0xe9, held as a lone surrogate


def test_output_dir_holds_one_sorted_part_file_per_reducer(cluster, books, tmp_path):
    out = tmp_path / "out"
    job = zmqmr.Job(
        wc_mapper, wc_reducer, inputs=books[:3], num_reducers=3, combiner=wc_reducer, output_dir=out
    )
    result = cluster.client().run(job)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]
    assert result.output_files == [str(out / f"part-0000{i}") for i in range(3)]
    from_files = {}
    for path in result.output_files:
        with open(path) as f:
            keys = []
            for line in f:
                k, v = line.rstrip("\n").split("\t")
                keys.append(k)
                from_files[k] = int(v)
        assert keys == sorted(keys)
    assert from_files == count_words(books[:3])
    assert dict(result.items()) == from_files  # and the objects came back too


def test_closures_and_lambdas_reach_workers_that_lack_this_module(cluster):
    # The workers cannot import this test module: it is not on their path.
    threshold = 10
    offset = {"n": 1000}

    def mapper(key, value):
        if value >= threshold:
            yield value % 3, value + offset["n"]

    job = zmqmr.Job(
        mapper, lambda k, vs: sorted(vs)[:3], inputs=[(i, i) for i in range(40)], num_reducers=2
    )
    assert dict(cluster.client().run(job).items()) == dict(zmqmr.run_serial(job).items())
    assert dict(cluster.client().run(job).items())[1] == [1010, 1013, 1016]


def test_results_too_large_without_output_dir_fail_with_advice(books, tmp_path):
    with zmqmr.LocalCluster(workers=1, result_limit=1000) as c:
        job = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:1], combiner=wc_reducer)
        with pytest.raises(zmqmr.ResultTooLarge, match="output_dir"):
            c.client().run(job)
        job.output_dir = str(tmp_path / "big")
        result = c.client().run(job)
        # int counts in the part files: their text does not say they were ints
        with pytest.raises(zmqmr.ResultTooLarge, match="text_items"):
            list(result.items())
        got = {k: int(v) for k, v in result.text_items()}  # read back from the part files
        assert got == count_words(books[:1])


def first_line(word, lines):
    return min(lines)


def test_results_too_large_that_are_their_part_files_lines_come_back_as_they_are(tmp_path):
    # str keys and values without a tab or newline: the part files' lines are the
    # results, whatever their characters (not ASCII, \r, a surrogate escape).
    records = [(i, f"w{i % 500:03d}\tv{i}-caf\u00e9\r\udc80\u2028") for i in range(4000)]

    def pair(key, value):
        word, _, rest = value.partition("\t")
        yield word, rest

    with zmqmr.LocalCluster(workers=2, result_limit=2000) as c:
        job = zmqmr.Job(
            pair, first_line, inputs=records, num_reducers=3, output_dir=str(tmp_path / "o")
        )
        result = c.client().run(job)
        assert list(result.items()) == list(zmqmr.run_serial(job).items())
        assert len(list(result.text_items())) == 500


def test_reduce_larger_than_memory_budget_spills_and_merges_from_disk(books):
    # Tiny budgets force map-side spills and merges and reduce-side fetches to disk.
    with zmqmr.LocalCluster(
        workers=2, spill_records=3000, combine_records=1000, reduce_memory=20_000, fetch_chunk=4096
    ) as c:
        job = zmqmr.Job(
            wc_mapper, wc_reducer, inputs=books[:3], num_reducers=2, split_size=512 * 1024
        )  # no combiner: every pair is shuffled
        result = c.client().run(job)
        assert list(result.items()) == list(zmqmr.run_serial(job).items())
        assert result.stats["shuffle_bytes"] > 20 * 20_000


def test_several_jobs_from_several_clients_all_finish_correctly(cluster, books):
    jobs = [
        zmqmr.Job(wc_mapper, wc_reducer, inputs=[b], combiner=wc_reducer, num_reducers=2)
        for b in books[:4]
    ]
    c1, c2 = cluster.client(), cluster.client()
    handles = [(c1 if i % 2 else c2).submit(j) for i, j in enumerate(jobs)]
    for handle, book in zip(handles, books[:4]):
        assert dict(handle.wait(timeout=60).items()) == count_words([book])


def test_job_handle_reports_progress_and_final_counts(cluster, books):
    handle = cluster.client().submit(
        zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:2], num_reducers=2)
    )
    first = handle.progress()
    assert first["maps"] == 2 and first["reduces"] == 2
    result = handle.wait(timeout=60)
    final = handle.progress()
    assert final["state"] == "succeeded" and final["maps_done"] == 2
    assert result.stats["map_attempts"] >= 2 and result.stats["total_seconds"] > 0


def test_status_lists_workers_with_slots_and_heartbeats(cluster):
    status = cluster.client().status()
    assert len(status["workers"]) == len(cluster.worker_pids)
    assert {w["pid"] for w in status["workers"]} == set(cluster.worker_pids)
    assert all(w["slots"] == 1 and w["last_heartbeat"] < 3 for w in status["workers"])


# -- bad input ---------------------------------------------------------------------------


def test_missing_input_path_fails_at_submit_naming_it(cluster, tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(zmqmr.JobSubmitError, match="nope.txt"):
        cluster.client().submit(zmqmr.Job(wc_mapper, wc_reducer, inputs=[missing]))
    with pytest.raises(zmqmr.JobSubmitError, match=r"\*\.nothing"):
        cluster.client().submit(
            zmqmr.Job(wc_mapper, wc_reducer, inputs=[str(tmp_path / "*.nothing")])
        )


def test_unpicklable_function_fails_at_submit_with_the_pickling_error(cluster):
    lock = threading.Lock()

    def mapper(k, v):
        with lock:
            yield k, v

    with pytest.raises(zmqmr.JobSubmitError, match="cannot be pickled.*lock"):
        cluster.client().submit(zmqmr.Job(mapper, wc_reducer, inputs=[(1, 2)]))


def test_settings_out_of_range_fail_at_submit_naming_the_setting(cluster):
    for kwargs, name in [
        ({"max_attempts": 0}, "max_attempts"),
        ({"num_reducers": 0}, "num_reducers"),
        ({"task_timeout": -1}, "task_timeout"),
        ({"split_size": 0}, "split_size"),
    ]:
        with pytest.raises(zmqmr.JobSubmitError, match=name):
            cluster.client().submit(zmqmr.Job(wc_mapper, wc_reducer, inputs=[(1, 2)], **kwargs))


def test_mapper_yielding_non_pairs_fails_the_job_saying_so(cluster):
    job = zmqmr.Job(lambda k, v: [v], wc_reducer, inputs=[(1, 5)], max_attempts=2)
    with pytest.raises(zmqmr.JobFailed, match=r"must yield \(key, value\) pairs") as info:
        cluster.client().run(job)
    assert info.value.remote_type == "TypeError"


def test_unorderable_keys_fail_naming_both_types(cluster):
    job = zmqmr.Job(lambda k, v: [(v, 1)], wc_reducer, inputs=[(1, "a"), (2, 3)], max_attempts=1)
    with pytest.raises(zmqmr.JobFailed, match=r"orderable.*(str.*int|int.*str)"):
        cluster.client().run(job)


class Quit(BaseException):
    """Not an Exception, as SystemExit and KeyboardInterrupt are not."""


@pytest.mark.parametrize("raised", [SystemExit("bye"), KeyboardInterrupt("ctrl-c"), Quit("q")])
@pytest.mark.parametrize("where", ["mapper", "reducer"])
def test_a_base_exception_from_user_code_is_the_users_error(cluster, raised, where):
    def mapper(key, value):
        if where == "mapper" and value == 3:
            raise raised
        yield value % 2, 1

    def reducer(key, values):
        if where == "reducer":
            raise raised
        return sum(values)

    job = zmqmr.Job(mapper, reducer, inputs=[(i, i) for i in range(6)], max_attempts=1)
    with pytest.raises(zmqmr.JobFailed) as info:
        cluster.client().run(job)
    err = info.value
    assert (err.remote_type, err.remote_message) == (type(raised).__name__, str(raised))
    assert f"in {where}" in err.remote_traceback and "raise raised" in err.remote_traceback
    ok = zmqmr.Job(wc_mapper, wc_reducer, inputs=[(0, "b a b")])
    assert dict(cluster.client().run(ok).items()) == {"a": 1, "b": 2}


def test_user_exception_carries_traceback_and_cluster_stays_usable(cluster, books):
    def mapper(key, value):
        if value == 13:
            raise ZeroDivisionError(f"bad luck at {key}")
        yield value, 1

    job = zmqmr.Job(mapper, wc_reducer, inputs=[(i, i) for i in range(20)], max_attempts=2)
    with pytest.raises(zmqmr.JobFailed) as info:
        cluster.client().run(job)
    err = info.value
    assert err.remote_type == "ZeroDivisionError"
    assert "bad luck at 13" in str(err)
    assert "in mapper" in err.remote_traceback and "raise ZeroDivisionError" in err.remote_traceback
    ok = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:1], combiner=wc_reducer)
    assert dict(cluster.client().run(ok).items()) == count_words(books[:1])


def test_client_without_master_gets_an_error_not_a_hang():
    from conftest import free_port

    client = zmqmr.Client(f"tcp://127.0.0.1:{free_port()}", timeout=0.5)
    try:
        with pytest.raises(zmqmr.MasterUnavailable, match="no answer"):
            client.run(zmqmr.Job(wc_mapper, wc_reducer, inputs=[(1, 2)]))
    finally:
        client.close()


# -- the map side's fast path must not change any answer ----------------------------------


def test_equal_values_of_different_types_keep_their_types(cluster):
    # 1 == 1.0 == True and 0.0 == -0.0: counting equal pairs must not merge them
    values = [1, 1.0, True, 0.0, -0.0, "1", b"1", None, 1, 1]

    def mapper(key, value):
        yield key % 3, value

    job = zmqmr.Job(
        mapper,
        lambda k, vs: sorted(map(repr, vs)),
        inputs=[(i, values[i % len(values)]) for i in range(3000)],
        num_reducers=2,
    )
    assert list(cluster.client().run(job).items()) == list(zmqmr.run_serial(job).items())


def test_dict_outputs_and_tuple_keys_group_as_pairs(cluster):
    def mapper(key, value):
        if key % 2:
            return {(key % 5, "odd"): value}
        return [((key % 5, "even"), value)]

    job = zmqmr.Job(
        mapper, lambda k, vs: sum(vs), inputs=[(i, i) for i in range(5000)], num_reducers=3
    )
    assert list(cluster.client().run(job).items()) == list(zmqmr.run_serial(job).items())


def test_counters_count_once_when_a_batch_falls_back_to_the_checked_loop(cluster):
    def mapper(key, value):
        zmqmr.increment("calls")
        if key == 700:
            return {99: 1}  # a dict output sends its batch down the checked loop
        return [(key % 4, 1)]

    job = zmqmr.Job(mapper, lambda k, vs: sum(vs), inputs=[(i, i) for i in range(5000)])
    result = cluster.client().run(job)
    assert result.counters["calls"] == 5000
    assert dict(result.items()) == dict(zmqmr.run_serial(job).items())


def test_unhashable_key_is_named_in_the_error(cluster):
    job = zmqmr.Job(lambda k, v: [([k], v)], wc_reducer, inputs=[(1, 2)], max_attempts=1)
    with pytest.raises(zmqmr.JobFailed, match="unhashable key of type list"):
        cluster.client().run(job)
