"""review.json: format round trip, validation, merging, and concurrent writers that lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from handanno.data.review_io import (
    MAX_REASON_CHARS,
    FrameReview,
    Review,
    apply_change,
    ignored_views,
    parse_review,
    read_review,
    rejected_frames,
    review_path,
    reviewer_accepted_frames,
    update_review,
)
from handanno.errors import HandannoError
from handanno.review.decisions import BadDecision, decision_change, ignore_change

FRAMES = {"000000", "000001", "000002"}
CAMERAS = {"cam0", "cam1", "cam2", "cam3"}


def test_round_trip(tmp_path):
    """What update_review writes, read_review reads back; the file is the documented format."""
    update_review(tmp_path, "000001", decision="reject", reason="thumb on the index")
    update_review(tmp_path, "000001", ignore=("cam2", True))
    update_review(tmp_path, "000002", decision="accept")
    update_review(tmp_path, "000000", ignore=("cam0", True))
    review = read_review(tmp_path)
    e = review.get("000001")
    assert (e.decision, e.reason, e.ignored_views) == ("reject", "thumb on the index", ("cam2",))
    assert e.time.endswith("Z") and "T" in e.time  # UTC ISO 8601
    assert parse_review(json.loads(review_path(tmp_path).read_text())) == review
    data = json.loads(review_path(tmp_path).read_text())
    assert data["version"] == 1
    assert set(data["frames"]["000001"]) == {"decision", "reason", "time", "ignored_views"}
    assert rejected_frames(tmp_path) == {"000001"}
    assert reviewer_accepted_frames(tmp_path) == {"000002"}
    assert ignored_views(tmp_path) == {"000001": {"cam2"}, "000000": {"cam0"}}
    # taking everything back leaves no entry for the frame
    update_review(tmp_path, "000000", ignore=("cam0", False))
    assert "000000" not in json.loads(review_path(tmp_path).read_text())["frames"]


def test_no_file_is_an_empty_review(tmp_path):
    assert read_review(tmp_path).frames == {}
    assert rejected_frames(tmp_path) == set() and ignored_views(tmp_path) == {}


def test_keeps_follows_the_reviewer_then_the_thresholds():
    r = Review({"a": FrameReview("reject"), "b": FrameReview("accept"), "c": FrameReview(None, ignored_views=("x",))})
    assert not r.keeps("a", True) and r.keeps("b", False)
    assert r.keeps("c", True) and not r.keeps("c", False) and r.keeps("d", True)


def test_a_new_decision_replaces_the_old_reason():
    r = apply_change(Review({}), "f", decision="reject", reason="blurred", time="T1")
    r = apply_change(r, "f", decision="accept", time="T2")
    assert r.get("f") == FrameReview("accept", "", "T2", ())


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ('{"version": 2, "frames": {}}', "version 2"),
    ('{"frames": {"000001": {"decision": "maybe"}}}', "decision 'maybe'"),
    ('{"frames": {"000001": {"reason": 5}}}', "reason must be text"),
    ('{"frames": {"000001": {"ignored_views": "cam0"}}}', "ignored_views must be a list"),
    ('{"frames": {"../x": {}}}', "not a valid name"),
    ('{"frames": {"000001": {"decision": "reject", "colour": "red"}}}', "unknown field"),
])  # fmt: skip
def test_broken_review_file_is_an_error_naming_it(tmp_path, content, match):
    review_path(tmp_path).write_text(content)
    with pytest.raises(HandannoError, match=match) as info:
        read_review(tmp_path)
    assert "review.json" in str(info.value)


@pytest.mark.parametrize("body, match", [
    ({"frame": "000009", "decision": "reject"}, "frame '000009' is not in this session"),
    ({"frame": "000001", "decision": "rejected"}, "decision 'rejected'"),
    ({"frame": "000001", "decision": "reject", "reason": "x" * (MAX_REASON_CHARS + 1)}, "at most 500"),
    ({"frame": "000001", "decision": "reject", "reason": "a\x00b"}, "control characters"),
    ({"frame": "000001", "decision": "reject", "reason": ["list"]}, "must be text"),
    ({"frame": "000001"}, "missing field"),
    ({"frame": "000001", "decision": "reject", "path": "/etc/passwd"}, "unknown field"),
    ({"frame": ["000001"], "decision": "reject"}, "not in this session"),
    ("reject", "expected a JSON object"),
])  # fmt: skip
def test_invalid_decisions_are_refused(body, match):
    with pytest.raises(BadDecision, match=match):
        decision_change(body, FRAMES)


@pytest.mark.parametrize("body, match", [
    ({"frame": "000001", "camera": "cam9", "ignored": True}, "camera 'cam9' is not in this session"),
    ({"frame": "000001", "camera": "../cam0", "ignored": True}, "not in this session"),
    ({"frame": "000001", "camera": "cam0", "ignored": "yes"}, "true or false"),
    ({"frame": "000001", "camera": "cam0"}, "missing field"),
])  # fmt: skip
def test_invalid_ignores_are_refused(body, match):
    with pytest.raises(BadDecision, match=match):
        ignore_change(body, FRAMES, CAMERAS)


def test_concurrent_threads_lose_nothing(tmp_path):
    """16 threads at once, each deciding its own frames and ignoring views of one shared frame: all kept."""
    n_threads, per_thread = 16, 10
    barrier = threading.Barrier(n_threads)
    errors = []

    def work(k: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                update_review(tmp_path, f"t{k:02d}_{i:02d}", decision="reject" if i % 2 else "accept", reason=f"{k}")
                update_review(tmp_path, "shared", ignore=(f"cam{k}_{i}", True))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    review = read_review(tmp_path)
    assert len(review.frames) == n_threads * per_thread + 1
    assert len(review.get("shared").ignored_views) == n_threads * per_thread
    assert review.get("t03_05").decision == "reject" and review.get("t03_05").reason == "3"


_WRITER = """
import sys
from handanno.data.review_io import update_review
root, k = sys.argv[1], int(sys.argv[2])
for i in range(15):
    update_review(root, f"p{k}_{i:02d}", decision="reject", reason="from process %d" % k)
    update_review(root, "shared", ignore=(f"cam{k}_{i}", True))
"""


def test_concurrent_processes_lose_nothing(tmp_path):
    """Four processes writing at once (as two servers on one session would): every change is in the file."""
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(k)]) for k in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    review = read_review(tmp_path)
    assert len(review.frames) == 4 * 15 + 1
    assert len(review.get("shared").ignored_views) == 4 * 15
    assert not [p for p in Path(tmp_path).iterdir() if p.name.endswith(".tmp.json")]  # no temp file left
