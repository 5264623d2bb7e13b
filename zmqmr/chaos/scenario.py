"""A chaos run's scenario: everything that decides it, and the command that replays it."""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from typing import Any

import zmqmr

from .workload import BOOKS_DIR, expand_inputs, resolve_job_file


@dataclass
class Scenario:
    """Everything that decides a chaos run; ``replay_command`` prints it back.

    ``hosts`` (a hosts file) makes it a lab run: the workers that
    scripts/start-workers.sh started on those hosts, the master at ``master``
    (its client address), faults over ssh; ``workers`` is then the number of
    hosts.
    """

    job_file: str = "wordcount"
    inputs: list[str] = field(default_factory=lambda: [f"{BOOKS_DIR}/*.txt"])
    nemeses: list[str] = field(default_factory=list)
    seed: int = 0
    workers: int = 4
    slots: int = 1
    reducers: int | None = None  # None: the job file's JOB, else CHAOS_DEFAULTS
    split_size: int | None = None  # None: the job file's JOB, else CHAOS_DEFAULTS
    settings: dict[str, Any] = field(default_factory=dict)  # Job settings (--set)
    output: bool = True  # part files in an output_dir (False: results via the master)
    pace: float = 0.0002
    window: float = 4.0
    faults: int | None = None
    deadline: float = 120.0
    netns: str = "auto"  # auto | on | off
    client_timeout: float = 5.0
    baseline: bool = True  # run the job once without faults first, for its time
    state_dir: bool = False  # the master keeps a journal: killed, it restarts and resumes
    # -- a lab (--hosts) ---------------------------------------------------------------
    hosts: str | None = None
    master: str | None = None
    master_host: str = ""  # where the master runs ("": this machine)
    run_dir: str = ""  # the lab scripts' --run-dir ("": ~/.zmqmr)
    master_run_dir: str | None = None  # start-master.sh's --run-dir (None: run_dir)
    keys: str | None = None
    insecure: bool = False
    output_dir: str | None = None  # a lab's shared directory for part files
    job: zmqmr.Job | None = None  # a job object instead of a job file (tests)

    @property
    def lab(self) -> bool:
        return self.hosts is not None

    def job_path(self) -> str:
        return resolve_job_file(self.job_file)

    def expanded_inputs(self) -> list[str]:
        return expand_inputs(self.inputs)

    def replay_command(self) -> str:
        if self.job is not None:
            return f"(a job object; replay with the same job and seed={self.seed})"
        d = Scenario()
        args = ["zmqmr", "chaos", "run", "--job", self.job_file]
        if self.inputs != d.inputs:
            args += ["--inputs", *self.inputs]
        if self.lab:
            args += ["--hosts", str(self.hosts), "--master", str(self.master)]
        else:
            args += ["--workers", str(self.workers)]
        args += ["--nemesis", ",".join(self.nemeses) or "none", "--seed", str(self.seed)]
        flags = [
            ("reducers", "--reducers"),
            ("split_size", "--split-size"),
            ("pace", "--pace"),
            ("window", "--window"),
            ("faults", "--faults"),
            ("deadline", "--deadline"),
            ("client_timeout", "--client-timeout"),
        ]
        if self.lab:
            flags += [
                ("master_host", "--master-host"),
                ("run_dir", "--run-dir"),
                ("master_run_dir", "--master-run-dir"),
                ("keys", "--keys"),
                ("output_dir", "--output-dir"),
            ]
        else:
            flags += [("slots", "--slots"), ("netns", "--netns")]
        for name, flag in flags:
            if getattr(self, name) != getattr(d, name):
                args += [flag, str(getattr(self, name))]
        for name, value in self.settings.items():
            args += ["--set", f"{name}={value}"]
        if self.lab and self.insecure:
            args.append("--insecure")
        if not self.output and not self.lab:
            args.append("--no-output-dir")
        if not self.baseline:
            args.append("--no-baseline")
        if self.state_dir and not self.lab:
            args.append("--state-dir")
        return " ".join(shlex.quote(a) for a in args)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(dataclasses.replace(self, job=None))
        out["job"] = self.job.name if self.job is not None else None
        return out
