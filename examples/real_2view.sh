#!/usr/bin/env bash
# The real two-camera capture (../shared/data/real_2view, README there) as a handanno session.
#
#   examples/real_2view.sh SESSION [DATA]
#
# 1. The rig: c0.dat / c1.dat (K, 5 distortion coefficients) and rot_trans_c0.dat /
#    rot_trans_c1.dat (world-to-camera R, T) are read as they are; T is not in metres but in
#    units of about 4.3 cm, hence --scale 0.043. The files store no image size; import takes
#    it from the videos (720x720). The same rig alone:
#      handanno rig convert DATA/camera_parameters rig.json --image-size 720x720 --scale 0.043
# 2. The videos (synchronized by frame index, 30 fps, 378 frames) become
#    SESSION/images/cam0|cam1/<frame>.jpg, every 2nd frame.
# Running it again does nothing; an interrupted run resumes.
set -euo pipefail

SESSION=${1:?usage: examples/real_2view.sh SESSION [DATA]  (DATA default: ../shared/data/real_2view)}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATA=${2:-${REAL_2VIEW:-$HERE/../../shared/data/real_2view}}
HANDANNO=${HANDANNO:-handanno}
command -v "$HANDANNO" >/dev/null || HANDANNO="python -m handanno.cli"

$HANDANNO import videos --out "$SESSION" \
    "$DATA/media/cam0_test.mp4" "$DATA/media/cam1_test.mp4" --names cam0,cam1 \
    --rig "$DATA/camera_parameters" --scale 0.043 \
    --every 2

echo
echo "next: handanno fit --session $SESSION --detector mediapipe"
