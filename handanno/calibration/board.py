"""Calibration boards: spec parsing, board geometry, corner detection and synthetic detections.

Convention:
    - Board frame: origin at the outer top-left corner of the printed board (ChArUco) or
      at the first inner corner (chessboard); x along the first size (``size_x``), y along
      the second (``size_y``), z = x cross y, pointing *into* the board, away from a camera
      that sees its printed side. Units: metres.
    - Corner ids are row-major over the inner-corner grid ``(nx, ny)``:
      ``id = row * nx + col``. A ChArUco corner ``id`` sits at
      ``((col + 1) * square_m, (row + 1) * square_m, 0)`` (OpenCV's
      ``CharucoBoard.getChessboardCorners`` order); a chessboard corner at
      ``(col * square_m, row * square_m, 0)`` (``findChessboardCorners`` order with
      ``patternSize = (nx, ny)``).
    - Pixels: ``(u, v)``, pixel (0, 0) is the centre of the top-left pixel (OpenCV).
    - ``image_size = (width, height)`` in pixels.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from handanno.check import check_shape
from handanno.errors import HandannoError

log = logging.getLogger(__name__)

BOARD_KINDS = ("charuco", "chessboard")

# Families tried when markers of the given dictionary are not found. The predefined
# DICT_nXn_50/100/250 dictionaries are prefixes of DICT_nXn_1000, so one detection with the
# 1000-marker version tells the family and the largest id in use.
_CANDIDATE_DICTIONARIES = (
    "DICT_4X4_1000",
    "DICT_5X5_1000",
    "DICT_6X6_1000",
    "DICT_7X7_1000",
    "DICT_ARUCO_ORIGINAL",
    "DICT_APRILTAG_36h11",
    "DICT_ARUCO_MIP_36h12",
)


def dictionary_names() -> list[str]:
    """All predefined ArUco dictionary names this OpenCV knows (``DICT_4X4_50``, ...)."""
    import cv2

    return sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_"))


def _dictionary_id(name: str) -> int:
    import cv2

    key = name.upper() if name.upper().startswith("DICT_") else "DICT_" + name.upper()
    # AprilTag names exist in both cases (DICT_APRILTAG_36h11 and _36H11).
    if not hasattr(cv2.aruco, key):
        raise HandannoError(
            f"unknown ArUco dictionary {name!r}; use a cv2.aruco DICT_* name such as DICT_4X4_50, DICT_5X5_100, "
            "DICT_6X6_250, DICT_7X7_1000, DICT_ARUCO_ORIGINAL or DICT_APRILTAG_36h11"
        )
    return int(getattr(cv2.aruco, key))


@dataclass(frozen=True)
class BoardSpec:
    """A calibration board, as given on the command line.

    Attributes:
        kind: ``"charuco"`` or ``"chessboard"``.
        size_x: ChArUco: squares along x; chessboard: inner corners along x.
        size_y: ChArUco: squares along y; chessboard: inner corners along y.
        square_m: side of one chessboard square, metres.
        marker_m: ChArUco marker side, metres (``None`` for chessboards).
        dictionary: ChArUco dictionary name, canonical upper case ``DICT_...``
            (``None`` for chessboards).
        legacy: ChArUco boards made before OpenCV 4.6 with an even number of rows
            (``CharucoBoard.setLegacyPattern``).

    Convention:
        See the module docstring: board frame, corner ids and units (metres).
    """

    kind: str
    size_x: int
    size_y: int
    square_m: float
    marker_m: float | None = None
    dictionary: str | None = None
    legacy: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BOARD_KINDS:
            raise HandannoError(f"board kind must be one of {BOARD_KINDS}, got {self.kind!r}")
        if self.size_x < 2 or self.size_y < 2 or (self.kind == "charuco" and self.size_x * self.size_y < 6):
            raise HandannoError(f"board size {self.size_x}x{self.size_y} is too small")
        if not (self.square_m > 0 and np.isfinite(self.square_m)):
            raise HandannoError(f"board square size must be a positive length in metres, got {self.square_m}")
        if self.kind == "charuco":
            if self.marker_m is None or not (0 < self.marker_m < self.square_m):
                raise HandannoError(
                    f"ChArUco marker size must be positive and smaller than the square ({self.square_m} m), "
                    f"got {self.marker_m}"
                )
            if self.dictionary is None:
                raise HandannoError("a ChArUco board needs a dictionary, e.g. DICT_4X4_50")
            _dictionary_id(self.dictionary)
            if self.num_markers > self.dictionary_size:
                raise HandannoError(
                    f"a {self.size_x}x{self.size_y} ChArUco board has {self.num_markers} markers but "
                    f"{self.dictionary} holds only {self.dictionary_size}; use a larger dictionary"
                )

    @property
    def inner_corners(self) -> tuple[int, int]:
        """``(nx, ny)`` inner-corner grid, the grid of corner ids."""
        if self.kind == "charuco":
            return self.size_x - 1, self.size_y - 1
        return self.size_x, self.size_y

    @property
    def num_corners(self) -> int:
        """Number of corners ``N`` on the board."""
        nx, ny = self.inner_corners
        return nx * ny

    @property
    def num_markers(self) -> int:
        """Number of ArUco markers on a ChArUco board (0 for a chessboard)."""
        return (self.size_x * self.size_y) // 2 if self.kind == "charuco" else 0

    @property
    def dictionary_size(self) -> int:
        """Number of markers in the dictionary (0 for a chessboard)."""
        if self.kind != "charuco":
            return 0
        import cv2

        return int(cv2.aruco.getPredefinedDictionary(_dictionary_id(self.dictionary)).bytesList.shape[0])

    def __str__(self) -> str:
        if self.kind == "chessboard":
            return f"chessboard:{self.size_x}x{self.size_y}:{self.square_m:g}"
        return f"charuco:{self.size_x}x{self.size_y}:{self.square_m:g}:{self.marker_m:g}:{self.dictionary}"

    def object_points(self) -> np.ndarray:
        """``(N, 3)`` corner positions in the board frame, metres, row ``i`` = corner id ``i``.

        Example:
            >>> parse_board_spec("chessboard:3x2:0.5").object_points().tolist()
            [[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.5, 0.5, 0.0], [1.0, 0.5, 0.0]]
        """
        nx, ny = self.inner_corners
        row, col = np.divmod(np.arange(nx * ny), nx)  # id = row * nx + col
        offset = 1.0 if self.kind == "charuco" else 0.0
        pts = np.stack([(col + offset) * self.square_m, (row + offset) * self.square_m, np.zeros(nx * ny)], axis=1)
        return pts  # (N, 3)

    def cv_board(self):
        """The OpenCV ``cv2.aruco.CharucoBoard`` (ChArUco only)."""
        import cv2

        if self.kind != "charuco":
            raise HandannoError("cv_board() is for ChArUco boards")
        dictionary = cv2.aruco.getPredefinedDictionary(_dictionary_id(self.dictionary))
        board = cv2.aruco.CharucoBoard((self.size_x, self.size_y), self.square_m, self.marker_m, dictionary)
        board.setLegacyPattern(self.legacy)
        return board


def parse_board_spec(spec: str, legacy: bool = False) -> BoardSpec:
    """Parse a ``--board`` string.

    Args:
        spec: ``"charuco:SXxSY:SQUARE_M:MARKER_M:DICT"`` (squares along x and y, square and
            marker sides in metres, an ArUco dictionary name such as ``DICT_4X4_50``; the
            ``DICT_`` prefix may be left out) or ``"chessboard:NXxNY:SQUARE_M"`` (inner
            corners along x and y, square side in metres).
        legacy: ChArUco pattern of OpenCV before 4.6 (matters for an even number of rows).

    Returns:
        The frozen :class:`BoardSpec`.

    Raises:
        HandannoError: on a malformed spec, with an example of the right form.

    Example:
        >>> spec = parse_board_spec("charuco:7x5:0.04:0.03:DICT_4X4_50")
        >>> (spec.kind, spec.size_x, spec.size_y, spec.square_m, spec.marker_m, spec.dictionary, spec.legacy)
        ('charuco', 7, 5, 0.04, 0.03, 'DICT_4X4_50', False)
        >>> parse_board_spec("chessboard:9x6:0.025").num_corners
        54
    """
    examples = "e.g. charuco:7x5:0.04:0.03:DICT_4X4_50 or chessboard:9x6:0.025"
    parts = [p.strip() for p in str(spec).split(":")]
    kind = parts[0].lower()
    want = {"charuco": 5, "chessboard": 3}
    if kind not in want:
        raise HandannoError(f"--board {spec!r}: the kind must be 'charuco' or 'chessboard' ({examples})")
    if len(parts) != want[kind]:
        raise HandannoError(f"--board {spec!r}: a {kind} spec has {want[kind]} fields separated by ':' ({examples})")
    try:
        sx, sy = (int(s) for s in parts[1].lower().split("x"))
    except ValueError as exc:
        raise HandannoError(f"--board {spec!r}: size must be like 7x5, got {parts[1]!r} ({examples})") from exc
    try:
        lengths = [float(p) for p in parts[2 : want[kind] - 1 if kind == "charuco" else 3]]
    except ValueError as exc:
        raise HandannoError(
            f"--board {spec!r}: square and marker sizes must be numbers in metres ({examples})"
        ) from exc
    if lengths[0] > 1.0:
        log.warning("board square %.3g m is over 1 m; sizes are in metres (0.04 for 4 cm)", lengths[0])
    if kind == "chessboard":
        return BoardSpec("chessboard", sx, sy, lengths[0])
    dictionary = parts[4].upper()
    dictionary = dictionary if dictionary.startswith("DICT_") else "DICT_" + dictionary
    # keep OpenCV's spelling for AprilTag-style names (DICT_APRILTAG_36h11 == DICT_APRILTAG_36H11)
    return BoardSpec("charuco", sx, sy, lengths[0], lengths[1], dictionary, bool(legacy))


@dataclass(frozen=True)
class Detection:
    """Board corners found in one image.

    Attributes:
        corner_ids: ``(K,)`` int64 corner ids (see the module convention), increasing.
        corners_px: ``(K, 2)`` float64 pixel positions ``(u, v)``.
        image_size: ``(width, height)`` of the image, pixels.
        markers_found: ChArUco markers detected (0 for chessboards), for diagnostics.
        refused: why corners that were found are not used (empty when none were refused):
            a chessboard whose corner order the image does not tell
            (:func:`canonical_chessboard_order`). A refused detection has ``K = 0``.

    Convention:
        ``corners_px[k]`` is where corner ``corner_ids[k]`` was seen; pixel (0, 0) is the
        centre of the top-left pixel. An image without the board has ``K = 0``.
    """

    corner_ids: np.ndarray
    corners_px: np.ndarray
    image_size: tuple[int, int]
    markers_found: int = 0
    refused: str = ""

    def __post_init__(self) -> None:
        ids = np.asarray(self.corner_ids, dtype=np.int64).reshape(-1)
        uv = np.asarray(self.corners_px, dtype=np.float64)
        uv = uv.reshape(-1, 2) if uv.size else np.zeros((0, 2))
        check_shape(uv, (ids.shape[0], 2), "Detection.corners_px")
        order = np.argsort(ids, kind="stable")
        ids, uv = ids[order], uv[order]
        ids.setflags(write=False)
        uv.setflags(write=False)
        object.__setattr__(self, "corner_ids", ids)
        object.__setattr__(self, "corners_px", uv)
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))

    @property
    def num_corners(self) -> int:
        """``K``, the number of corners found."""
        return int(self.corner_ids.shape[0])

    @classmethod
    def empty(cls, image_size: tuple[int, int], markers_found: int = 0, refused: str = "") -> Detection:
        """A detection with no corners (``refused``: why corners found were not used)."""
        return cls(np.zeros(0, np.int64), np.zeros((0, 2)), image_size, markers_found, refused)

    def dense(self, num_corners: int) -> np.ndarray:
        """``(N, 2)`` pixels with NaN rows for corners not found."""
        out = np.full((num_corners, 2), np.nan)
        out[self.corner_ids] = self.corners_px
        return out


def _image_size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def detect_board(image: np.ndarray, spec: BoardSpec, detector_params=None) -> Detection:
    """Find the board's corners in one image.

    Args:
        image: ``(H, W)`` grey or ``(H, W, 3)`` BGR uint8.
        spec: the board.
        detector_params: optional ``cv2.aruco.DetectorParameters`` (ChArUco).

    Returns:
        A :class:`Detection`; ``K = 0`` when the board is not found. ChArUco boards give any
        subset of corners interpolated from at least 2 neighbouring markers; chessboards
        give all corners or none (``findChessboardCorners`` + ``cornerSubPix``, falling
        back to ``findChessboardCornersSB``), in :func:`canonical_chessboard_order`; when
        the image does not tell that order, none, with the reason in ``refused``.
    """
    import cv2

    grey = _grey(image)
    size = _image_size(grey)
    if spec.kind == "charuco":
        params = detector_params if detector_params is not None else cv2.aruco.DetectorParameters()
        detector = cv2.aruco.CharucoDetector(spec.cv_board(), cv2.aruco.CharucoParameters(), params)
        corners, ids, _, marker_ids = detector.detectBoard(grey)
        markers = 0 if marker_ids is None else len(marker_ids)
        if ids is None or len(ids) == 0:
            return Detection.empty(size, markers)
        return Detection(ids.reshape(-1), corners.reshape(-1, 2), size, markers)

    pattern = spec.inner_corners
    # The classic detector is fast (ms, and quick to give up on images without the board);
    # its corners are refined with cornerSubPix in a window of about half a square. The
    # sector-based detector (SB) is slower but copes with blur and noise: it runs when the
    # classic one fails.
    found, corners = cv2.findChessboardCorners(
        grey, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    )
    if found:
        grid = corners.reshape(pattern[1], pattern[0], 2)
        spacing = float(np.min(np.linalg.norm(np.diff(grid, axis=1), axis=-1)))
        half = int(np.clip(0.4 * spacing, 2, 11))
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-3)
        corners = cv2.cornerSubPix(grey, corners, (half, half), (-1, -1), criteria)
    else:
        found, corners = cv2.findChessboardCornersSB(
            grey, pattern, flags=cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE
        )
    if not found or corners is None:
        return Detection.empty(size)
    found_px = corners.reshape(-1, 2).astype(np.float64)  # (N, 2)
    corners = canonical_chessboard_order(grey, found_px, pattern)
    if corners is None:
        evidence = chessboard_order_evidence(grey, found_px, pattern)
        return Detection.empty(size, refused=(
            f"the chessboard's corners were found but their order (which end is corner 0) is ambiguous: "
            f"{evidence.describe()}; the view is left out rather than risk a board turned by 180 degrees "
            "(light the board evenly, avoid glare, bring it closer or in focus)"
        ))  # fmt: skip
    return Detection(np.arange(spec.num_corners), corners, size)


def chessboard_is_symmetric(spec: BoardSpec) -> bool:
    """True for chessboards that look the same turned by 180 degrees (``nx + ny`` even).

    Their corner order cannot be told from the image, so cameras may disagree on it.
    """
    return spec.kind == "chessboard" and (spec.size_x + spec.size_y) % 2 == 0


# Contrast (grey levels) and share of neighbouring squares that must agree before a chessboard's corner
# order is taken from the image (:func:`chessboard_order_evidence`); below either, the view is refused.
ORDER_MIN_CONTRAST_GREY = 5.0
ORDER_MIN_AGREEMENT = 0.8


@dataclass(frozen=True)
class OrderEvidence:
    """What an image says about the order of a chessboard's corners.

    Attributes:
        contrast_grey: median, over pairs of neighbouring inner squares, of the grey level of
            the square that is white in the found order minus the one that is black there
            (grey levels of the ``uint8`` image): positive when the corners are already in
            the board's order (:func:`canonical_chessboard_order`), negative when reversed.
        agreement: fraction of those pairs whose difference has the sign of
            ``contrast_grey``, in ``[0, 1]``.
        pairs: number of neighbouring square pairs measured.

    Convention:
        Inner square ``(i, j)`` (column, row) lies between corners ``(i, j)``, ``(i + 1, j)``,
        ``(i, j + 1)`` and ``(i + 1, j + 1)`` of the grid; in the board's order it is black
        when ``i + j`` is even (the outer square diagonal to corner 0 is black).
    """

    contrast_grey: float
    agreement: float
    pairs: int

    def decided(
        self, min_contrast_grey: float = ORDER_MIN_CONTRAST_GREY, min_agreement: float = ORDER_MIN_AGREEMENT
    ) -> bool:
        """True when the evidence clears both margins (the order can be trusted)."""
        return abs(self.contrast_grey) >= min_contrast_grey and self.agreement >= min_agreement

    def describe(
        self, min_contrast_grey: float = ORDER_MIN_CONTRAST_GREY, min_agreement: float = ORDER_MIN_AGREEMENT
    ) -> str:
        """One phrase for the user, e.g. ``"black and white squares differ by 2.1 grey levels ..."``."""
        return (
            f"black and white squares differ by {abs(self.contrast_grey):.1f} grey levels (at least "
            f"{min_contrast_grey:g} needed) and {self.agreement:.0%} of {self.pairs} neighbouring square pairs "
            f"agree (at least {min_agreement:.0%} needed)"
        )


def chessboard_order_evidence(grey: np.ndarray, corners_px: np.ndarray, pattern: tuple[int, int]) -> OrderEvidence:
    """Measure which way round a chessboard's corners are, from the colours of its inner squares.

    On a board with ``nx + ny`` odd, a 180 degree turn of the corner grid swaps the colours
    of all inner squares, so comparing each pair of neighbouring inner squares is a vote on
    the order. Each square's grey level is the median of 5 x 5 samples over the middle of
    the quad of its four corners (perspective and distortion stay small across one square);
    comparing neighbours, rather than all squares with a global threshold, keeps lighting
    gradients out of the vote. The outer squares are not used: they lie beyond the corners
    found, where glare, a holding hand or the edge of the print can change their colour.

    Args:
        grey: ``(H, W)`` uint8 image.
        corners_px: ``(N, 2)`` corners in row-major order of ``pattern``, pixels.
        pattern: ``(nx, ny)`` inner corners.

    Returns:
        The :class:`OrderEvidence` (``pairs == 0`` on a board without two inner squares).

    Example:
        >>> cells = np.add.outer(np.arange(4), np.arange(5)) % 2 * 255  # 5 x 4 squares, black top-left
        >>> img = np.kron(cells, np.ones((20, 20))).astype(np.uint8)
        >>> row, col = np.divmod(np.arange(12), 4)
        >>> corners = np.stack([(col + 1) * 20 - 0.5, (row + 1) * 20 - 0.5], axis=1)
        >>> ev = chessboard_order_evidence(img, corners, (4, 3))
        >>> (round(ev.contrast_grey), ev.agreement, ev.pairs)
        (255, 1.0, 7)
        >>> chessboard_order_evidence(img, corners[::-1].copy(), (4, 3)).contrast_grey < 0
        True
    """
    import cv2

    nx, ny = pattern
    check_shape(corners_px, (nx * ny, 2), "corners_px")
    grid = corners_px.reshape(ny, nx, 2)  # (ny, nx, 2), grid[j, i] = corner (col i, row j)
    s = np.linspace(0.3, 0.7, 5)
    a, b = (w.reshape(1, 1, -1, 1) for w in np.meshgrid(s, s))  # (1, 1, 25, 1) along x, along y
    p00, p01 = grid[:-1, :-1, None], grid[:-1, 1:, None]  # (ny-1, nx-1, 1, 2)
    p10, p11 = grid[1:, :-1, None], grid[1:, 1:, None]
    pts = (1 - a) * (1 - b) * p00 + a * (1 - b) * p01 + (1 - a) * b * p10 + a * b * p11  # (ny-1, nx-1, 25, 2)
    S = (ny - 1) * (nx - 1)
    if S < 2:
        return OrderEvidence(0.0, 0.0, 0)
    maps = pts.reshape(S, 25, 2).astype(np.float32)  # (S, 25, 2)
    samples = cv2.remap(np.asarray(grey, np.float32), maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)  # (S, 25)  # fmt: skip
    g = np.median(samples, axis=1).reshape(ny - 1, nx - 1)  # (ny-1, nx-1) grey per inner square
    dark = np.add.outer(np.arange(ny - 1), np.arange(nx - 1)) % 2 == 0  # (ny-1, nx-1) black in board order
    sign = np.where(dark, 1.0, -1.0)
    right = (g[:, 1:] - g[:, :-1]) * sign[:, :-1]  # (ny-1, nx-2) right minus left neighbour, light minus dark
    below = (g[1:, :] - g[:-1, :]) * sign[:-1, :]  # (ny-2, nx-1) lower minus upper neighbour
    diff = np.concatenate([right.ravel(), below.ravel()])  # (P,)
    contrast = float(np.median(diff))
    agreement = float(np.mean(np.sign(diff) == np.sign(contrast))) if contrast != 0 else 0.0
    return OrderEvidence(contrast, agreement, int(diff.size))


def canonical_chessboard_order(
    grey: np.ndarray,
    corners_px: np.ndarray,
    pattern: tuple[int, int],
    min_contrast_grey: float = ORDER_MIN_CONTRAST_GREY,
    min_agreement: float = ORDER_MIN_AGREEMENT,
) -> np.ndarray | None:
    """Put chessboard corners in the board's own order: corner 0 touches a black outer square.

    ``findChessboardCornersSB`` and ``findChessboardCorners`` start from opposite ends of
    the same board (checked on rotated renders of a 9x6 board), so the order is fixed here
    from the image (:func:`chessboard_order_evidence`): on a board with ``nx + ny`` odd a
    180 degree turn swaps the colours of the squares, and corner 0 is the one at the black
    outer square (a board printed with a black top-left square, as OpenCV's pattern).
    When the image does not tell the two orders apart (contrast or agreement below the
    margins), ``None`` is returned: a possibly reversed order is never kept, since one view
    reversed in one camera wrecks a multi-camera calibration. Symmetric boards
    (``nx + ny`` even) are returned as found.

    Args:
        grey: ``(H, W)`` uint8 image.
        corners_px: ``(N, 2)`` corners in row-major order of ``pattern``.
        pattern: ``(nx, ny)`` inner corners.
        min_contrast_grey: least ``|contrast_grey|`` of :class:`OrderEvidence`, grey levels.
        min_agreement: least agreement of :class:`OrderEvidence`.

    Returns:
        ``(N, 2)`` corners, possibly reversed (a 180 degree turn of the grid), or ``None``
        when the order is ambiguous.
    """
    nx, ny = pattern
    check_shape(corners_px, (nx * ny, 2), "corners_px")
    if (nx + ny) % 2 == 0:
        return corners_px
    evidence = chessboard_order_evidence(grey, corners_px, pattern)
    if not evidence.decided(min_contrast_grey, min_agreement):
        return None
    return corners_px if evidence.contrast_grey > 0 else corners_px[::-1].copy()


def _count_markers(grey: np.ndarray, dictionary_name: str, params=None) -> np.ndarray:
    import cv2

    dictionary = cv2.aruco.getPredefinedDictionary(_dictionary_id(dictionary_name))
    detector = cv2.aruco.ArucoDetector(dictionary, params if params is not None else cv2.aruco.DetectorParameters())
    _, ids, _ = detector.detectMarkers(grey)
    return np.zeros(0, np.int64) if ids is None else ids.reshape(-1).astype(np.int64)


def _smallest_dictionary(family_1000: str, max_id: int) -> str:
    if not family_1000.endswith("_1000"):
        return family_1000
    for n in (50, 100, 250, 1000):
        if max_id < n:
            return family_1000[: -len("1000")] + str(n)
    return family_1000


def diagnose_board(image: np.ndarray, spec: BoardSpec, detector_params=None) -> str:
    """Say why ``spec`` finds no corners in ``image`` and, where possible, what would.

    Tries the image with the given dictionary, other common dictionaries, the swapped
    board size and the legacy pattern (ChArUco), or the squares-vs-inner-corners mix-up
    and ArUco markers (chessboards).

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8.
        spec: the board the user gave.
        detector_params: optional ``cv2.aruco.DetectorParameters``.

    Returns:
        One or two sentences for the user (empty if the board is in fact found).
    """
    import cv2

    grey = _grey(image)
    if detect_board(grey, spec, detector_params).num_corners > 0:
        return ""
    if spec.kind == "charuco":
        ids = _count_markers(grey, spec.dictionary, detector_params)
        if len(ids):
            hints = []
            swapped = dataclasses.replace(spec, size_x=spec.size_y, size_y=spec.size_x)
            for alt in (swapped, dataclasses.replace(spec, legacy=not spec.legacy)):
                found = detect_board(grey, alt, detector_params).num_corners
                if found:
                    flag = " --legacy" if alt.legacy else (" without --legacy" if spec.legacy else "")
                    hints.append(f"--board {alt}{flag} finds {found} corners")
            msg = (
                f"{len(ids)} ArUco markers of {spec.dictionary} were detected (ids {int(ids.min())}-{int(ids.max())}) "
                f"but no ChArUco corners were interpolated with a {spec.size_x}x{spec.size_y} board "
                f"(which uses marker ids 0-{spec.num_markers - 1})"
            )
            if hints:
                return msg + "; " + "; ".join(hints) + "."
            return msg + "; check the board size (squares along x by y) and --legacy for boards made before OpenCV 4.6."
        best, best_ids = None, np.zeros(0, np.int64)
        for name in _CANDIDATE_DICTIONARIES:
            found_ids = _count_markers(grey, name, detector_params)
            if len(found_ids) > len(best_ids):
                best, best_ids = name, found_ids
            if len(best_ids) >= 4:  # families rarely decode each other's markers; stop at a clear match
                break
        if best is not None and len(best_ids) >= 2:
            guess = _smallest_dictionary(best, int(best_ids.max()))
            family = f"the {best[: -len('1000')]}* family" if best.endswith("_1000") else best
            return (
                f"no markers of {spec.dictionary} were found, but {len(best_ids)} markers of {family} were "
                f"(ids {int(best_ids.min())}-{int(best_ids.max())}), so the images use {guess} or a larger "
                f"dictionary of that family; try --board "
                f"{BoardSpec('charuco', spec.size_x, spec.size_y, spec.square_m, spec.marker_m, guess)}."
            )
        return (
            f"no ArUco markers of {spec.dictionary} or other common dictionaries were found: is the board in view, "
            "lit and in focus?"
        )

    # chessboard
    for alt_size in ((spec.size_x - 1, spec.size_y - 1), (spec.size_x + 1, spec.size_y + 1)):
        if min(alt_size) < 2:
            continue
        found, _ = cv2.findChessboardCornersSB(grey, alt_size, flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
        if found:
            alt = BoardSpec("chessboard", alt_size[0], alt_size[1], spec.square_m)
            return (
                f"a chessboard of {alt_size[0]}x{alt_size[1]} inner corners was found: try --board {alt} "
                "(the size counts inner corners, one less than the squares each way)."
            )
    for name in _CANDIDATE_DICTIONARIES[:4]:
        if len(_count_markers(grey, name, detector_params)) >= 2:
            return f"ArUco markers ({name} family) were found: is this a ChArUco board? Use --board charuco:..."
    return (
        f"no {spec.size_x}x{spec.size_y} chessboard was found; the size counts inner corners "
        "(a board of 10x7 squares has 9x6 inner corners) and the whole board must be in view."
    )


def read_detector_params(path: str) -> object:
    """Read ``cv2.aruco.DetectorParameters`` from an OpenCV FileStorage file (YAML/JSON)."""
    import cv2

    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    if not fs.isOpened():
        raise HandannoError(f"{path}: cannot read ArUco detector parameters (OpenCV FileStorage YAML expected)")
    params = cv2.aruco.DetectorParameters()
    if not params.readDetectorParameters(fs.root()):
        raise HandannoError(f"{path}: not ArUco detector parameters")
    fs.release()
    return params
