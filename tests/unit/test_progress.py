"""Progress bars and callbacks of a waiting client, without a cluster."""

from __future__ import annotations

import io

from zmqmr.progress import Bars, Progress


def report(**kw):
    p = {"state": "running", "maps": 4, "maps_done": 0, "reduces": 2, "reduces_done": 0}
    p.update({"running": 1, "elapsed": 1.0, "workers": 1}, **kw)
    return p


def test_bars_show_each_phase_with_its_counts_and_say_when_no_worker_is_there():
    out = io.StringIO()
    bars = Bars("wordcount", out)
    bars.update(report(workers=0))
    assert "waiting for a worker to join the cluster" in out.getvalue()
    bars.update(report(maps_done=3, workers=2))
    bars.close()
    text = out.getvalue()
    assert "wordcount map" in text and "wordcount reduce" in text
    assert "3/4" in text and "0/2" in text
    assert "task/s" in text or "s/task" in text  # the rate


def test_a_reexecuted_map_moves_the_bar_back():
    out = io.StringIO()
    bars = Bars("j", out)
    bars.update(report(maps_done=4))
    bars.update(report(maps_done=3))
    assert bars._bars["map"].n == 3
    bars.close()


def test_a_callback_gets_every_report_and_no_bar_is_drawn():
    seen = []
    out = io.StringIO()
    p = Progress("j", seen.append, stream=out)
    assert p.active and p.bars is None
    p.report(report(maps_done=1))
    p.report(report(maps_done=2))
    p.close()
    assert [r["maps_done"] for r in seen] == [1, 2]
    assert out.getvalue() == ""


def test_output_that_is_not_a_terminal_gets_no_bars_unless_asked():
    out = io.StringIO()
    assert Progress("j", None, stream=out).bars is None
    assert Progress("j", False, stream=out).bars is None
    assert Progress("j", True, stream=out).bars is not None
