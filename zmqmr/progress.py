"""What a waiting client shows: map and reduce progress bars, or a callback.

The bars are tqdm's (its notebook widget under Jupyter), with the tasks done,
their rate and the time left; ``Client.run`` shows them when its output is a
terminal or a notebook, and nothing otherwise. A program passes
``progress=callable`` instead and is called with each progress report (a
dict: ``state``, ``maps``, ``maps_done``, ``reduces``, ``reduces_done``,
``running``, ``elapsed``, ``workers``). Imports: the standard library and tqdm.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from typing import IO, Any

#: What ``Client.run(progress=...)`` takes: None (bars on a terminal or in a
#: notebook), True or False (bars or none), or a function called with each report.
ProgressArg = bool | None | Callable[[dict[str, Any]], object]


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where stderr is no terminal)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _bar_class(notebook: bool) -> Any:
    if notebook:
        try:
            from tqdm.notebook import tqdm as notebook_bar

            return notebook_bar
        except ImportError:  # no ipywidgets: text bars, which a notebook shows as well
            pass
    from tqdm import tqdm

    return tqdm


class Bars:
    """Two tqdm bars, map and reduce, moved to each report's task counts."""

    def __init__(self, name: str, stream: IO[str], notebook: bool = False) -> None:
        self.name = name
        self.stream = stream
        self.notebook = notebook
        self._bars: dict[str, Any] = {}
        self._waiting = False

    def _file(self) -> IO[str] | None:
        return None if self.notebook else self.stream

    def _bar(self, phase: str, total: int, position: int) -> Any:
        bar = self._bars.get(phase)
        if bar is None:
            cls = _bar_class(self.notebook)
            kwargs: dict[str, Any] = {}
            if not self.notebook:  # tqdm hides its bars on a terminal that says it is 0x0
                size = shutil.get_terminal_size()
                kwargs = {"file": self.stream, "ncols": size.columns, "nrows": size.lines}
            bar = cls(
                total=total,
                desc=f"{self.name[:40]} {phase}",
                unit="task",
                position=position,
                leave=True,
                **kwargs,
            )
            self._bars[phase] = bar
        return bar

    def update(self, p: dict[str, Any]) -> None:
        waiting = not p.get("workers", 1)
        if waiting and not self._waiting:  # said once, above the bars, each time it happens
            _bar_class(self.notebook).write(
                f"{self.name}: waiting for a worker to join the cluster", file=self._file()
            )
        self._waiting = waiting
        for position, phase in enumerate(("map", "reduce")):
            total = int(p.get(f"{phase}s", 0))
            done = int(p.get(f"{phase}s_done", 0))
            bar = self._bar(phase, total, position)
            if bar.total != total:
                bar.total = total
            if done != bar.n:
                bar.update(done - bar.n)  # a re-executed map can move the count back
            bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars = {}


class Progress:
    """Reports to bars, to a callback, or nowhere, as ``progress`` asks."""

    def __init__(self, name: str, progress: ProgressArg, stream: IO[str] | None = None) -> None:
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self.callback = progress if callable(progress) else None
        notebook = in_notebook()
        if self.callback is not None:
            show = False
        elif progress is None:
            show = notebook or _isatty(self.stream)
        else:
            show = bool(progress)
        self.bars = Bars(name, self.stream, notebook) if show else None

    @property
    def active(self) -> bool:
        """Whether reports are wanted often (bars or a callback)."""
        return self.bars is not None or self.callback is not None

    def report(self, p: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback(dict(p))
        if self.bars is not None:
            self.bars.update(p)

    def close(self) -> None:
        if self.bars is not None:
            self.bars.close()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
