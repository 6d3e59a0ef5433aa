"""The review page's web application (Flask) and its server.

Routes (all read-only but the two ``POST`` ones, which write ``review.json`` only):

=====================================  ====================================================================
``GET /``                              the page (``static/index.html``; its JavaScript and CSS under ``/static``)
``GET /api/session``                   cameras (intrinsics, poses), bones, frame count, notes
``GET /api/frames``                    every frame's status and quality figures (:mod:`~handanno.review.frames`)
``GET /api/frame/<frame>``             one frame: each view's crop box, detections, fitted skeleton, mesh
                                       outline, reprojection error and IoU, or the view's error
``GET /api/view/<frame>/<camera>.jpg`` the view's crop on the hand (``?full=1``: the whole image), made on
                                       demand and kept in a memory cache
``GET /api/mesh/<frame>``              the fitted mesh (vertices, faces) and keypoints for the 3D view
``POST /api/decision``                 ``{frame, decision, reason}`` (:mod:`~handanno.review.decisions`)
``POST /api/ignore``                   ``{frame, camera, ignored}``
=====================================  ====================================================================

Security: the server binds 127.0.0.1 unless told otherwise; requests must name a local host
(``Host`` header: no DNS rebinding) and writes must be same-origin JSON (no cross-site form
posts); every file served is one of the session's own, resolved inside the session folder
(:func:`~handanno.review.paths.inside_session`: ``..``, absolute paths and symlinks out are
refused); frames and cameras in URLs must be the session's; the page loads nothing from
outside (a ``Content-Security-Policy`` of ``'self'``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch
from flask import Flask, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from handanno.annotate.session_io import Session, open_session, read_keypoints_file
from handanno.data.conventions import BONES
from handanno.data.files_io import read_image
from handanno.data.review_io import MAX_REASON_CHARS, Review, read_review, review_path
from handanno.errors import HandannoError
from handanno.handmodel.mano import ManoLayer
from handanno.handmodel.model_io import load_hand_model
from handanno.review.cache import LRUCache
from handanno.review.decisions import BadDecision, decision_change, ignore_change, save_change
from handanno.review.frames import STATUSES, FitReader, frame_row, frame_status, quality_figures
from handanno.review.paths import OutsideSession, inside_session
from handanno.review.views import CROP_PX, crop_view, encode_jpeg, view_geometry, whole_image_box

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CACHE_MB = 256
_CSP = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip


def _r(a: np.ndarray | None, nd: int = 1) -> list | None:
    """Array to nested lists rounded to ``nd`` decimals (None stays None)."""
    return None if a is None else np.round(np.asarray(a, np.float64), nd).tolist()


@dataclass
class _State:
    """What the application's requests share: the session, the fit reader, the caches, the hand models."""

    session: Session
    model_dir: str | None
    fits: FitReader
    cache: LRUCache
    frame_set: frozenset[str]
    camera_set: frozenset[str]
    layers: dict[str, ManoLayer | HandannoError] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def layer(self, side: str) -> ManoLayer:
        """The hand model for ``side`` (loaded once; a model that cannot be loaded raises each time)."""
        with self.lock:
            if side not in self.layers:
                try:
                    self.layers[side] = ManoLayer(load_hand_model(side, self.model_dir))
                except HandannoError as exc:
                    self.layers[side] = exc
            layer = self.layers[side]
        if isinstance(layer, HandannoError):
            raise layer
        return layer


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """A file's version: inode (an atomic write is a new one), mtime and size; None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _mesh(state: _State, record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, str | None]:
    """``(vertices (V, 3), joints (21, 3), faces (F, 3), note)`` of a fit record, world metres."""
    layer = state.layer(record["hand"])
    with torch.no_grad():
        out = layer(*(torch.as_tensor(np.asarray(record[k])[None], dtype=layer.dtype)
                      for k in ("pose", "betas", "trans")))  # fmt: skip
    note = None
    if record.get("model") not in (None, layer.name):
        note = (f"the fit was made with the hand model {record.get('model')!r}, drawn here with {layer.name!r}; "
                "pass --model-dir with the fit's model")  # fmt: skip
    return (out.vertices[0].double().numpy(), out.joints[0].double().numpy(), layer.faces.numpy(), note)


def _posed(state: _State, frame: str, entry) -> tuple[np.ndarray, np.ndarray, np.ndarray, str | None]:
    """:func:`_mesh` of the frame's fit, posed once per version of its file (the frame's views and the 3D view)."""
    def size(m) -> int:
        return m[0].nbytes + m[1].nbytes + m[2].nbytes

    return state.cache.get_or_make(("mesh", frame, entry.stamp), lambda: _mesh(state, entry.record), size)


def _review(state: _State) -> Review:
    """The session's review.json, read and checked once per version of the file."""
    root = state.session.root
    return state.cache.get_or_make(("review", _stamp(review_path(root))), lambda: read_review(root), lambda r: 1024)


def _frame_data(state: _State, frame: str) -> dict:
    """Everything of one frame but the review entry: fit, per-view geometry and errors (cached until a file changes)."""
    s = state.session
    entry = state.fits.read(frame)
    kp_paths = [s.keypoints_path(c, frame) for c in s.cameras]
    key = ("frame", frame, entry.stamp, tuple(_stamp(p) for p in kp_paths),
           tuple(_stamp(p) if (p := s.images.get((c, frame))) else None for c in s.cameras))  # fmt: skip

    def make() -> dict:
        rec = entry.record
        verts = joints = None
        faces = np.zeros((0, 3), np.int64)
        mesh_note = None
        if rec is not None:
            try:
                verts, joints, faces, mesh_note = _posed(state, frame, entry)
            except HandannoError as exc:  # no such hand model here: the skeleton from the record, no outline
                joints, mesh_note = np.asarray(rec["joints"]), f"no mesh: {exc}"
        quality = (rec or {}).get("quality") or {}
        views = []
        for cam, kp_path in zip(s.rig, kp_paths, strict=True):
            view = {"camera": cam.name, "image_size": list(cam.image_size), "error": None, "detections": None,
                    "detections_error": None, "source": None,
                    "reproj_err_px": (quality.get("reproj_err_px") or {}).get(cam.name),
                    "mask_iou": (quality.get("mask_iou") or {}).get(cam.name)}  # fmt: skip
            det = None
            if kp_path.is_file():
                try:
                    det = read_keypoints_file(kp_path)
                    view["detections"] = _r(det, 2)
                except HandannoError as exc:
                    view["detections_error"] = str(exc)
            geo = view_geometry(cam, verts, joints if verts is not None else None, faces, det)
            if verts is None and joints is not None:
                geo_joints = cam.project(joints)  # a record without a usable mesh: its keypoints
            else:
                geo_joints = geo.joints_uv
            image = s.images.get((cam.name, frame))
            if image is None:
                view["error"] = s.bad_views.get((cam.name, frame), "no image")
            token = hashlib.sha1(repr((key, cam.name)).encode()).hexdigest()[:12]
            view.update(box=list(geo.box), full_box=list(whole_image_box(cam.image_size)), crop_px=CROP_PX,
                        joints_uv=_r(geo_joints), outline=[_r(p) for p in geo.outline],
                        image=f"/api/view/{frame}/{cam.name}.jpg?v={token}",
                        image_full=f"/api/view/{frame}/{cam.name}.jpg?full=1&v={token}")  # fmt: skip
            views.append(view)
        return {"frame": frame, "index": s.frames.index(frame), "fitted": rec is not None, "fit_error": entry.error,
                "mesh_note": mesh_note, "quality": quality_figures(quality) if rec is not None else None,
                "quality_record": quality, "views": views, "hand": (rec or {}).get("hand"),
                "model": (rec or {}).get("model")}  # fmt: skip

    return state.cache.get_or_make(key, make, lambda d: 4096 + 2048 * len(d["views"]))


class _NotFound(HandannoError):
    """A frame or camera that is not the session's."""


def _error(status: int, message: str) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = status
    return resp


def create_app(session_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None,
               allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS, cache_mb: int = CACHE_MB) -> Flask:  # fmt: skip
    """The review application for one session folder.

    Args:
        session_dir: the session (opened with every view, the ignored ones too).
        model_dir: the MANO folder the fits were made with; None: ``$HANDANNO_MODEL_DIR`` or the
            open hand model (as ``handanno fit``).
        allowed_hosts: host names requests may be addressed to (DNS rebinding); None allows any
            (the server was bound to a non-local address on purpose).
        cache_mb: memory for cached crops and frame geometry, MiB.

    Raises:
        HandannoError: the session cannot be opened, or its ``review.json`` is broken.
    """
    # absolute: the session's image paths are joined to it, and every served path is checked against it
    session = open_session(Path(session_dir).resolve(), obey_review=False)
    read_review(session.root)  # a broken review.json stops here, naming the file
    state = _State(session=session, model_dir=None if model_dir is None else str(model_dir),
                   fits=FitReader(session.fits_dir), cache=LRUCache(cache_mb << 20),
                   frame_set=frozenset(session.frames), camera_set=frozenset(session.cameras))  # fmt: skip
    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.json.sort_keys = False  # keys in the order written
    app.extensions["handanno_review"] = state

    @app.before_request
    def guard() -> Response | None:
        host = urlsplit(f"//{request.host}").hostname or ""
        if allowed_hosts is not None and host not in allowed_hosts:
            return _error(403, f"host {request.host!r} is not served (only {', '.join(allowed_hosts)})")
        if request.method == "POST":
            if not request.is_json:
                return _error(415, "changes must be sent as application/json")
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return _error(403, f"origin {origin!r} may not change this session's review")
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = _CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if request.path.startswith("/api/") and "Cache-Control" not in resp.headers:
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.get("/")
    def index() -> Response:
        resp = send_from_directory(STATIC_DIR, "index.html")
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @app.get("/api/session")
    def api_session() -> Response:
        cams = [{"name": c.name, "image_size": list(c.image_size), "K": c.K.tolist(), "R": c.R.tolist(),
                 "t": c.t.tolist(), "center": c.center.tolist()} for c in session.rig]  # fmt: skip
        n_fits = sum(session.fit_path(f).is_file() for f in session.frames)
        return jsonify({"name": session.root.name, "root": str(session.root), "frames": len(session.frames),
                        "fits": n_fits, "cameras": cams, "bones": [list(b) for b in BONES], "statuses": STATUSES,
                        "notes": list(session.skipped[:50]), "review_file": str(review_path(session.root)),
                        "reason_max": MAX_REASON_CHARS, "crop_px": CROP_PX})  # fmt: skip

    @app.get("/api/frames")
    def api_frames() -> Response:
        try:
            review = _review(state)
        except HandannoError as exc:
            return _error(500, str(exc))
        rows = []
        for f in session.frames:
            entry = state.fits.read(f)
            rows.append(frame_row(f, entry.record, entry.error, review.get(f)))
        counts = {k: sum(r["status"] == k for r in rows) for k in STATUSES}
        return jsonify({"frames": rows, "counts": counts, "fitted": sum(r["fitted"] for r in rows)})

    def known_frame(frame: str) -> str:
        if frame not in state.frame_set:
            raise _NotFound(f"frame {frame[:80]!r} is not in this session")
        return frame

    @app.get("/api/frame/<frame>")
    def api_frame(frame: str) -> Response:
        data = dict(_frame_data(state, known_frame(frame)))
        entry = _review(state).get(frame)
        accepted = None if not data["fitted"] else bool(data["quality_record"].get("accepted"))
        data["review"] = entry.to_json()
        data["status"] = frame_status(accepted, entry.decision)
        data["views"] = [{**v, "ignored": v["camera"] in entry.ignored_views} for v in data["views"]]
        return jsonify(data)

    @app.get("/api/view/<frame>/<camera>.jpg")
    def api_view(frame: str, camera: str) -> Response:
        known_frame(frame)
        if camera not in state.camera_set:
            return _error(404, f"camera {camera[:80]!r} is not in this session")
        path = session.images.get((camera, frame))
        if path is None:
            return _error(404, f"camera {camera} frame {frame}: "
                               f"{session.bad_views.get((camera, frame), 'no image')}")  # fmt: skip
        try:
            path = inside_session(session.root, path)
        except OutsideSession as exc:
            return _error(403, f"camera {camera} frame {frame}: {exc}")
        full = request.args.get("full") == "1"
        data = _frame_data(state, frame)
        view = next(v for v in data["views"] if v["camera"] == camera)
        box = view["full_box"] if full else view["box"]
        key = ("jpg", frame, camera, full, _stamp(path), tuple(box))

        def make() -> bytes:
            return encode_jpeg(crop_view(read_image(path), tuple(box), CROP_PX))

        try:
            jpg = state.cache.get_or_make(key, make, len)
        except (HandannoError, ValueError) as exc:
            return _error(422, f"camera {camera} frame {frame}: {exc}")
        resp = Response(jpg, mimetype="image/jpeg")
        resp.headers["Cache-Control"] = "private, max-age=86400"  # the URL changes with the files (?v=)
        return resp

    @app.get("/api/mesh/<frame>")
    def api_mesh(frame: str) -> Response:
        entry = state.fits.read(known_frame(frame))
        if entry.record is None:
            return _error(404, f"frame {frame}: {entry.error or 'not fitted yet'}")
        try:
            verts, joints, faces, note = _posed(state, frame, entry)
        except HandannoError as exc:
            return _error(422, f"frame {frame}: {exc}")
        return jsonify({"frame": frame, "vertices": _r(verts, 5), "faces": faces.tolist(), "joints": _r(joints, 5),
                        "note": note})  # fmt: skip

    @app.post("/api/decision")
    def api_decision() -> Response:
        return _save(lambda body: decision_change(body, state.frame_set))

    @app.post("/api/ignore")
    def api_ignore() -> Response:
        return _save(lambda body: ignore_change(body, state.frame_set, state.camera_set))

    def _save(check) -> Response:
        try:
            frame, change = check(request.get_json(silent=True))
            entry = save_change(session.root, frame, change)
        except BadDecision as exc:
            return _error(400, str(exc))
        except HandannoError as exc:  # review.json broken, disk full
            return _error(500, str(exc))
        log.info("review: frame %s %s", frame, entry)
        return jsonify({"frame": frame, "review": entry.to_json()})

    @app.errorhandler(_NotFound)
    def not_found(exc: _NotFound) -> Response:
        return _error(404, str(exc))

    return app


def make_review_server(app: Flask, host: str = "127.0.0.1", port: int = 8000) -> BaseWSGIServer:
    """A threaded WSGI server for ``app`` (``port`` 0: a free one, see ``server.server_port``); not started."""
    return make_server(host, port, app, threaded=True)


def serve(session_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, open_browser: bool = False,
          model_dir: str | os.PathLike | None = None) -> None:  # fmt: skip
    """``handanno review``: serve the page for a session until interrupted (Ctrl-C).

    A host other than 127.0.0.1 / localhost / ::1 serves the page (and lets anyone who reaches it
    write review.json) to the network: a warning says so.
    """
    local = host in LOCAL_HOSTS
    if not local:
        log.warning("review: serving on %s: anyone who can reach this address can see the session and change "
                    "review.json", host)  # fmt: skip
    app = create_app(session_dir, model_dir, allowed_hosts=LOCAL_HOSTS if local else None)
    try:
        server = make_review_server(app, host, port)
    except (OSError, SystemExit) as exc:  # werkzeug exits (after saying why) when the port is taken
        why = f" ({exc.strerror})" if isinstance(exc, OSError) else ""
        raise HandannoError(f"cannot serve on {host}:{port}{why}; is the port in use? choose another --port") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/"
    log.info("handanno review: %s at %s (Ctrl-C stops it)", Path(session_dir), url)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
