"""Real captures in: videos to a session folder (``handanno import videos``).

- :mod:`handanno.capture.video_io`: decoding with OpenCV, frame by frame with exact indices,
  and the scan that counts a video's frames and checks its frame rate.
- :mod:`handanno.capture.timeline`: the session's common timeline (offsets, frame rates,
  ``--every``, ``--start``, ``--end``), pure.
- :mod:`handanno.capture.sync`: integer frame offsets between cameras from hand detections.
- :mod:`handanno.capture.videos`: :func:`~handanno.capture.videos.import_videos`, which ties
  them together and writes ``images/<cam>/<frame>.jpg``, ``rig.json`` and ``import.json``.
"""
