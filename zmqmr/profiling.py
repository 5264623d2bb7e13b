"""A profiling switch for zmqmr's own processes: ``ZMQMR_PROFILE=DIR``.

With the variable set, the master, each worker and each executor run under
``cProfile`` and write their statistics to ``DIR/ROLE-PID.prof`` (read them
with ``python -m pstats``), in CPU seconds of the process's main thread (a
process waiting for its socket or pipe, or preempted, spends none). The
master and a worker write when they stop; an executor whenever a job ends
(its worker kills it with SIGKILL, so it would never get to write at exit),
each time with everything since it started. Without the variable nothing
here costs anything. Imports: the standard library only.
"""

from __future__ import annotations

import cProfile
import os
import time

ENV = "ZMQMR_PROFILE"


class Profile:
    """``p = Profile("worker"); p.start(); ...; p.dump()``: a no-op unless ZMQMR_PROFILE is set."""

    def __init__(self, role: str) -> None:
        where = os.environ.get(ENV)
        self.path = os.path.join(where, f"{role}-{os.getpid()}.prof") if where else None
        self._prof = cProfile.Profile(time.thread_time) if self.path else None

    def start(self) -> None:
        if self._prof is not None:
            self._prof.enable()

    def dump(self) -> None:
        """Write the statistics so far (the profile goes on)."""
        if self._prof is None or self.path is None:
            return
        self._prof.disable()
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._prof.dump_stats(self.path)
        except OSError:
            pass  # a profile that cannot be written must not stop the process
        finally:
            self._prof.enable()
