#!/usr/bin/env bash
# Problem 1 grading: bash hw2_p1.sh <image dir> <output csv>
# Writes image_id,label for every image; the checkpoint is $P1_CKPT or checkpoints/p1_best.pt.
set -euo pipefail
[ "$#" -eq 2 ] || { echo "usage: bash hw2_p1.sh <image dir> <output csv>" >&2; exit 2; }
DIR="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
PY="$DIR/.venv/bin/python"; [ -x "$PY" ] || PY=python3
exec "$PY" "$DIR/p1_test.py" --images="$1" --output="$2"
