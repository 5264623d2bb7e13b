"""A Jepsen-style chaos harness for zmqmr (DESIGN.md §6).

A cluster of real processes (``ChaosCluster``), nemeses that kill, pause,
slow, corrupt and cut off its nodes (``NEMESES``), schedules drawn from a
seed (``make_schedule``), a history of every fault (``History``), and a
checker that compares the job's answer with ``zmqmr.run_serial``
(``check``). ``run_scenario(Scenario(...))`` puts them together for one job;
``soak`` runs many. ``zmqmr chaos`` (or ``python -m zmqmr.chaos``) is the
command line; see docs/chaos.md.

It ships with zmqmr (the sample books and the built-in jobs are package
data), uses zmqmr's public API (plus ``zmqmr.cli.job_from_file``, the
job-file convention of ``zmqmr run``), and no module of zmqmr's core imports
it: ``zmqmr chaos`` is handed over from ``zmqmr.cli`` before anything else.
"""

from .checker import Outcome, Verdict, check
from .cluster import ChaosCluster
from .history import History
from .lab import LabCluster
from .nemesis import NEMESES, Nemesis
from .runner import Report, Scenario, run_scenario
from .schedule import KINDS, TOLERATED, Fault, make_schedule, parse_kinds
from .soak import SoakResult, soak

__all__ = [
    "KINDS",
    "LabCluster",
    "NEMESES",
    "TOLERATED",
    "ChaosCluster",
    "Fault",
    "History",
    "Nemesis",
    "Outcome",
    "Report",
    "Scenario",
    "SoakResult",
    "Verdict",
    "check",
    "make_schedule",
    "parse_kinds",
    "run_scenario",
    "soak",
]
