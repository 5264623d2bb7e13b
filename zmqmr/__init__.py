"""zmqmr: MapReduce for Python on ZeroMQ, in the shape of Google's MapReduce paper.

The public API, and nothing else::

    job = zmqmr.Job(mapper, reducer, inputs=["books/*.txt"], num_reducers=4)
    with zmqmr.LocalCluster(workers=4) as cluster:
        result = cluster.client().run(job)
    oracle = zmqmr.run_serial(job)
"""

from .client import Client, JobHandle
from .errors import (
    ClusterError,
    CorruptOutput,
    JobCancelled,
    JobError,
    JobFailed,
    JobLost,
    JobSubmitError,
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

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ClusterError",
    "CorruptOutput",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobLost",
    "JobResult",
    "JobSubmitError",
    "LocalCluster",
    "MasterUnavailable",
    "ProtocolError",
    "RangePartitioner",
    "ResultTooLarge",
    "ShuffleError",
    "WholeFiles",
    "ZmqmrError",
    "__version__",
    "default_partitioner",
    "increment",
    "run_serial",
]
