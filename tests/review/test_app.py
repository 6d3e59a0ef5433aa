"""The review application through Flask's test client: what it serves, what it refuses, what it writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from handanno.data.review_io import read_review, review_path
from handanno.review.app import create_app

from .conftest import CAMERAS, FRAMES


@pytest.fixture(scope="module")
def client(fitted_dir):
    return create_app(fitted_dir).test_client()


def _decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_page_and_assets_are_served_without_outside_resources(client):
    page = client.get("/")
    assert page.status_code == 200 and b"handanno review" in page.data
    for asset in ("/static/review.js", "/static/view3d.js", "/static/review.css"):
        r = client.get(asset)
        assert r.status_code == 200, asset
        assert b"http://" not in r.data and b"https://" not in r.data, asset  # nothing from the internet
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert b"http" not in page.data.replace(b'http-equiv', b'')


def test_session_frames_and_one_frame(client):
    s = client.get("/api/session").get_json()
    assert [c["name"] for c in s["cameras"]] == list(CAMERAS) and s["frames"] == 3 and s["fits"] == 3
    rows = client.get("/api/frames").get_json()["frames"]
    assert [r["frame"] for r in rows] == list(FRAMES)
    assert {r["status"] for r in rows} == {"accepted"}  # accept_all thresholds
    assert all(r["worst_reproj_err_px"] >= r["median_reproj_err_px"] > 0 for r in rows)
    d = client.get("/api/frame/000001").get_json()
    assert d["fitted"] and [v["camera"] for v in d["views"]] == list(CAMERAS)
    for v in d["views"]:
        assert v["error"] is None and len(v["joints_uv"]) == 21 and len(v["detections"]) == 21
        assert v["outline"] and len(v["outline"][0]) >= 8  # the mesh's outline, a polygon
        x0, y0, side = v["box"]
        uv = np.array(v["joints_uv"])
        assert np.all((uv >= [x0, y0]) & (uv <= [x0 + side, y0 + side]))  # the crop holds the hand
        assert isinstance(v["reproj_err_px"], float)
        img = _decode(client.get(v["image"]).data)
        assert img.shape == (v["crop_px"], v["crop_px"], 3)
        full = _decode(client.get(v["image_full"]).data)
        assert full.shape == img.shape
    mesh = client.get("/api/mesh/000001").get_json()
    assert np.array(mesh["vertices"]).shape == (778, 3) and np.array(mesh["joints"]).shape == (21, 3)
    assert np.array(mesh["faces"]).shape[1] == 3


@pytest.mark.parametrize("url", [
    "/static/../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2F..%2F..%2Fetc%2Fpasswd",
    "/static//etc/passwd",
    "/api/frame/..%2F..%2Fetc%2Fpasswd",
    "/api/frame/%2Fetc%2Fpasswd",
    "/api/view/000000/..%2F..%2F..%2Fetc%2Fpasswd.jpg",
    "/api/view/..%2Frig/cam0.jpg",
    "/api/view/000000/..%2Frig.jpg",
    "/api/view/%2Fetc%2Fpasswd/cam0.jpg",
    "/api/mesh/..%2F..%2Fetc%2Fpasswd",
    "/../../etc/passwd",
    "//etc/passwd",
    "/rig.json",
    "/fits/000000.json",
])  # fmt: skip
def test_paths_out_of_the_session_are_refused(client, url):
    r = client.get(url, follow_redirects=True)  # werkzeug redirects '//' to '/' (same host)
    assert r.status_code in (403, 404), (url, r.status_code)
    assert b"root:" not in r.data and b'"cameras"' not in r.data


def test_a_symlink_out_of_the_session_is_refused(synth_dir, copy_session, tmp_path):
    root = copy_session(synth_dir)
    outside = tmp_path / "outside.png"
    os.replace(root / "images" / "cam1" / "000001.png", outside)  # a real image, but outside the session
    (root / "images" / "cam1" / "000001.png").symlink_to(outside)
    client = create_app(root).test_client()
    r = client.get("/api/view/000001/cam1.jpg")
    assert r.status_code == 403 and "outside the session" in r.get_json()["error"]
    assert client.get("/api/view/000001/cam0.jpg").status_code == 200  # the other views still work


def test_a_session_given_by_a_relative_path_serves_its_images(fitted_dir, monkeypatch):
    """``handanno review --session runs/s`` from the folder above it: the images are found (the session's
    paths are not joined to the relative root twice)."""
    monkeypatch.chdir(fitted_dir.parent)
    client = create_app(Path(fitted_dir.name)).test_client()
    for url in ("/api/view/000000/cam0.jpg", "/api/view/000000/cam1.jpg?full=1"):
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.data[:200])
        assert _decode(r.data).ndim == 3


def test_other_hosts_and_cross_site_writes_are_refused(fitted_dir, copy_session):
    root = copy_session(fitted_dir)
    client = create_app(root).test_client()
    assert client.get("/api/frames", headers={"Host": "evil.example:8000"}).status_code == 403  # DNS rebinding
    body = {"frame": "000001", "decision": "reject"}
    assert client.post("/api/decision", data=json.dumps(body)).status_code == 415  # a plain form post
    assert client.post("/api/decision", json=body, headers={"Origin": "http://evil.example"}).status_code == 403
    assert not review_path(root).exists()


def test_decisions_are_validated_then_saved(fitted_dir, copy_session):
    root = copy_session(fitted_dir)
    client = create_app(root).test_client()
    bad = [("/api/decision", {"frame": "000009", "decision": "reject"}),
           ("/api/decision", {"frame": "000001", "decision": "delete"}),
           ("/api/decision", {"frame": "000001", "decision": "reject", "reason": "x" * 501}),
           ("/api/ignore", {"frame": "000001", "camera": "cam7", "ignored": True}),
           ("/api/ignore", {"frame": "000001", "camera": "cam1", "ignored": 1})]  # fmt: skip
    for url, body in bad:
        r = client.post(url, json=body)
        assert r.status_code == 400 and r.get_json()["error"], body
    assert not review_path(root).exists()  # nothing written
    r = client.post("/api/decision", json={"frame": "000001", "decision": "reject", "reason": "index finger off"})
    assert r.status_code == 200 and r.get_json()["review"]["decision"] == "reject"
    assert client.post("/api/ignore", json={"frame": "000002", "camera": "cam3", "ignored": True}).status_code == 200
    review = read_review(root)
    assert review.get("000001").decision == "reject" and review.get("000001").reason == "index finger off"
    assert review.get("000002").ignored_views == ("cam3",)
    rows = {r["frame"]: r for r in client.get("/api/frames").get_json()["frames"]}
    assert rows["000001"]["status"] == "reviewer-rejected" and rows["000000"]["status"] == "accepted"
    views = client.get("/api/frame/000002").get_json()["views"]
    assert [v["ignored"] for v in views] == [False, False, False, True]


def test_session_without_fits(synth_dir):
    """No fits yet: every frame is "not fitted", the views still have their images and detections."""
    client = create_app(synth_dir).test_client()
    d = client.get("/api/frames").get_json()
    assert d["fitted"] == 0 and {r["status"] for r in d["frames"]} == {"not-fitted"}
    f = client.get("/api/frame/000000").get_json()
    assert not f["fitted"] and f["quality"] is None
    for v in f["views"]:
        assert v["detections"] is not None and v["joints_uv"] is None and v["outline"] == []
        assert client.get(v["image"]).status_code == 200
    assert client.get("/api/mesh/000000").status_code == 404


def test_a_corrupt_image_is_that_view_s_error(synth_dir, copy_session):
    root = copy_session(synth_dir)
    path = root / "images" / "cam2" / "000000.png"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    client = create_app(root).test_client()
    views = {v["camera"]: v for v in client.get("/api/frame/000000").get_json()["views"]}
    assert "cam2" in views and views["cam2"]["error"] and "000000.png" in views["cam2"]["error"]
    r = client.get(views["cam2"]["image"])
    assert r.status_code == 404 and "000000.png" in r.get_json()["error"]
    assert client.get(views["cam1"]["image"]).status_code == 200  # the page keeps working
    path.unlink()  # the file is gone while the server runs
    views2 = client.get("/api/frame/000001").get_json()["views"]
    assert client.get(views2[2]["image"]).status_code == 200


def test_review_command(synth_dir):
    """``handanno review`` is one command with its options; a port in use is a one-line error naming it."""
    import socket

    from click.testing import CliRunner

    from handanno.cli import main

    res = CliRunner().invoke(main, ["review", "--help"])
    assert res.exit_code == 0
    assert all(opt in res.output for opt in ("--session", "--port", "--host", "--open"))
    assert "127.0.0.1" in res.output  # the default host
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(main, ["review", "--session", str(synth_dir), "--port", str(port)])
    assert res.exit_code == 2 and f"127.0.0.1:{port}" in res.output and "--port" in res.output
