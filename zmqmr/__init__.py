"""zmqmr: MapReduce for Python on ZeroMQ, in the shape of Google's MapReduce paper.

The public API, and nothing else::

    job = zmqmr.Job(mapper, reducer, inputs=["books/*.txt"], num_reducers=4)
    with zmqmr.LocalCluster(workers=4) as cluster:
        result = cluster.client().run(job)
    oracle = zmqmr.run_serial(job)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client, JobHandle
    from .errors import (
        ClusterError,
        CorruptOutput,
        JobCancelled,
        JobError,
        JobFailed,
        JobLost,
        JobSubmitError,
        MasterRefused,
        MasterUnavailable,
        ProtocolError,
        ResultTooLarge,
        ShuffleError,
        ZmqmrError,
    )
    from .inputs import WholeFiles
    from .job import Job, JobResult
    from .local import LocalCluster
    from .partitioning import RangePartitioner
    from .serial import run_serial
    from .userfn import default_partitioner, increment

#: Where each public name lives. The names are imported on first use, so a
#: process that imports one submodule (an executor, a worker, the master) does not
#: pay for the client, LocalCluster and run_serial it never uses.
_HOMES = {
    "Client": "client",
    "JobHandle": "client",
    "WholeFiles": "inputs",
    "Job": "job",
    "JobResult": "job",
    "LocalCluster": "local",
    "RangePartitioner": "partitioning",
    "run_serial": "serial",
    "default_partitioner": "userfn",
    "increment": "userfn",
    **dict.fromkeys(
        [
            "ClusterError",
            "CorruptOutput",
            "JobCancelled",
            "JobError",
            "JobFailed",
            "JobLost",
            "JobSubmitError",
            "MasterRefused",
            "MasterUnavailable",
            "ProtocolError",
            "ResultTooLarge",
            "ShuffleError",
            "ZmqmrError",
        ],
        "errors",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__version__ = "0.1.0"

#: The public names: those of ``_HOMES`` (the type checker's view of them is the
#: import block above) and the version.
__all__ = [*sorted(_HOMES), "__version__"]
