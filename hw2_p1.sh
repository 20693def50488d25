#!/usr/bin/env bash
# Problem 1 grading: bash hw2_p1.sh <image dir> <output folder or .csv>
# Writes image_id,label for every image to <output folder>/test_pred.csv (or to the .csv given); the
# checkpoint is $P1_CKPT, else checkpoints/p1_best.pt (downloaded when missing: core/hub.py).
set -euo pipefail
[ "$#" -eq 2 ] || { echo "usage: bash hw2_p1.sh <image dir> <output folder or .csv>" >&2; exit 2; }
DIR="$(CDPATH='' cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
. "$DIR/core/python.sh"
exec "$PY" "$DIR/p1_test.py" --images="$1" --output="$2"
