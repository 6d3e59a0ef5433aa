"""``handanno review``: a local web page to check a session's fits and accept or reject them.

The page (``static/``: HTML, CSS and plain JavaScript shipped with handanno, nothing from the
internet) talks to a small Flask application (:mod:`~handanno.review.app`) bound to
127.0.0.1. It shows every frame's status and quality figures, every view of a frame zoomed on
the hand with the fitted mesh's outline, the fitted skeleton and the 2D detections, and a 3D
view of the fitted mesh among the cameras. The only file it writes is ``review.json``
(:mod:`handanno.data.review_io`), which ``handanno export``, ``fit`` and ``bootstrap`` obey;
images, keypoints and masks are never changed.

Modules, one job each:

- :mod:`~handanno.review.paths`: every path served resolved inside the session folder;
- :mod:`~handanno.review.cache`: a small thread-safe LRU of encoded images and per-frame geometry;
- :mod:`~handanno.review.frames`: frame statuses and quality figures from ``fits/``;
- :mod:`~handanno.review.views`: per-view geometry (crop box on the hand, mesh outline) and crops;
- :mod:`~handanno.review.decisions`: the page's decisions checked against the session, then saved;
- :mod:`~handanno.review.app`: the Flask application and the server.
"""
