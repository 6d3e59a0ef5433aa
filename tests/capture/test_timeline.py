"""The common timeline (pure), offsets parsing and frame-interval checks."""

from __future__ import annotations

import numpy as np
import pytest

from handanno.capture.sync import choose_samples
from handanno.capture.timeline import Timeline, parse_offsets
from handanno.capture.video_io import VideoScan, interval_stats
from handanno.errors import HandannoError


def test_same_rate_offsets_and_counts():
    line = Timeline.make(["a", "b", "c"], [100, 90, 120], [30.0, 30.0, 30.0], {"b": -7, "c": 12})
    lo, hi = line.common_range()
    assert (lo, hi) == (7, 97)  # b needs t >= 7; b ends at t + -7 < 90; c at t + 12 < 120; a < 100
    assert line.source(1, 7) == 0 and line.source(2, 7) == 19
    np.testing.assert_array_equal(line.select(every=10), np.arange(7, 97, 10))
    assert line.dropped() == {"a": {"before": 7, "after": 3, "rate": None},
                              "b": {"before": 0, "after": 0, "rate": None},
                              "c": {"before": 19, "after": 11, "rate": None}}


def test_start_end_seconds():
    line = Timeline.make(["a", "b"], [100, 100], [10.0, 10.0])
    np.testing.assert_array_equal(line.select(start_s=1.0, end_s=2.0), np.arange(10, 20))
    np.testing.assert_array_equal(line.select(every=4, start_s=0.25, end_s=1.0), [3, 7])
    with pytest.raises(HandannoError, match="no frame left between --start and --end"):
        line.select(start_s=50.0)


def test_different_rates_use_the_slowest_and_nearest_frames():
    line = Timeline.make(["a", "b"], [50, 120], [25.0, 60.0])
    assert line.rate == 25.0
    t = np.arange(50)
    src = line.source(1, t)
    assert np.all(np.abs(src / 60.0 - t / 25.0) <= 0.5 / 60.0 + 1e-12)  # nearest in time
    assert line.common_range() == (0, 50)
    assert "about 58% of its frames are dropped" in line.dropped()["b"]["rate"]
    # 29.97 against 30: one frame skipped about every 1000
    line = Timeline.make(["a", "b"], [3000, 3000], [29.97, 30.0])
    src = line.source(1, np.arange(2997))
    assert set(np.diff(src).tolist()) == {1, 2} and (np.diff(src) == 2).sum() == 3


def test_no_common_frames_is_an_error():
    line = Timeline.make(["a", "b"], [10, 10], [30.0, 30.0], {"b": 20})
    with pytest.raises(HandannoError, match="no frame in common"):
        line.select()


def test_parse_offsets():
    assert parse_offsets("cam1=-7,cam2=12") == {"cam1": -7, "cam2": 12}
    assert parse_offsets(None) == {} and parse_offsets("") == {}
    with pytest.raises(HandannoError, match="CAMERA=FRAMES"):
        parse_offsets("cam1:7")
    with pytest.raises(HandannoError, match="twice"):
        parse_offsets("a=1,a=2")
    with pytest.raises(HandannoError, match="not imported"):
        Timeline.make(["a"], [1], [1.0], {"z": 1})


def test_interval_stats_flags_a_variable_frame_rate():
    steady = interval_stats(np.arange(100) * 1000 / 30, 30.0)
    assert not steady["variable"] and steady["interval_median_ms"] == pytest.approx(33.333, abs=1e-3)
    ts = np.cumsum(np.r_[0, np.full(50, 33.3), np.full(10, 66.7), np.full(50, 33.3)])
    vfr = interval_stats(ts, 30.0)
    assert vfr["variable"] and vfr["irregular_frames"] == 10 and vfr["interval_max_ms"] == pytest.approx(66.7)
    assert not interval_stats(np.zeros(10), 30.0)["variable"]  # no timestamps: nothing said


def test_choose_samples():
    assert choose_samples(0, 10, 30, 30).tolist() == list(range(10))
    assert choose_samples(5, 5, 3, 0).size == 0


def test_variable_rate_note_names_camera_file_and_intervals(tmp_path):
    ts = np.cumsum(np.r_[0, np.full(20, 33.3), 100.0, np.full(20, 33.3)])
    scan = VideoScan("cam3", tmp_path / "c3.mp4", 42, 42, 30.0, (64, 48), interval_stats(ts, 30.0))
    note = scan.variable_rate_note
    assert note.startswith("cam3 (c3.mp4): variable frame rate, 1 of 41 frame intervals") and "100.0 ms" in note
    assert VideoScan.from_dict("cam3", scan.to_dict()) == scan
    steady = VideoScan("cam0", tmp_path / "c0.mp4", 3, 3, 30.0, (64, 48), interval_stats(np.array([0, 33.3, 66.7]), 30))
    assert steady.variable_rate_note is None
