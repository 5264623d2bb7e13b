"""Workers' own temp dirs: a live owner's lock keeps one, a dead owner's is swept."""

from __future__ import annotations

import os

from zmqmr import layout


def test_a_held_lock_keeps_a_dir_and_a_released_one_lets_the_sweep_remove_it(tmp_path):
    live, live_fd = layout.make_temp_dir(str(tmp_path))
    dead, dead_fd = layout.make_temp_dir(str(tmp_path))
    os.makedirs(os.path.join(dead, "data", "job"))
    os.close(dead_fd)  # what the kernel does when its worker dies, however
    try:
        assert layout.sweep_temp_dirs(str(tmp_path)) == [dead]
        assert os.path.isdir(live) and not os.path.exists(dead)
        assert layout.sweep_temp_dirs(str(tmp_path)) == []
    finally:
        os.close(live_fd)
    assert layout.sweep_temp_dirs(str(tmp_path)) == [live]


def test_the_sweep_leaves_what_is_not_a_locked_worker_dir(tmp_path):
    (tmp_path / "zmqmr-worker-nolock").mkdir()  # no lock file: not known to be a worker's
    (tmp_path / "zmqmr-worker-file").write_text("")  # not a directory
    (tmp_path / "other").mkdir()
    link = tmp_path / "zmqmr-worker-link"
    target, fd = layout.make_temp_dir(str(tmp_path / "other"))
    os.close(fd)
    link.symlink_to(target)  # a symlink is never followed
    assert layout.sweep_temp_dirs(str(tmp_path)) == []
    assert sorted(os.listdir(tmp_path)) == [
        "other",
        "zmqmr-worker-file",
        "zmqmr-worker-link",
        "zmqmr-worker-nolock",
    ]
    assert os.path.isdir(target)


def test_a_missing_root_sweeps_nothing(tmp_path):
    assert layout.sweep_temp_dirs(str(tmp_path / "absent")) == []
