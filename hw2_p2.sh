#!/usr/bin/env bash
# Problem 2 grading: bash hw2_p2.sh <image dir> <output dir>
# Writes <id>_mask.png for every <id>_sat.jpg; the checkpoint is $P2_CKPT or checkpoints/p2_best.pt.
set -euo pipefail
[ "$#" -eq 2 ] || { echo "usage: bash hw2_p2.sh <image dir> <output dir>" >&2; exit 2; }
DIR="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
PY="$DIR/.venv/bin/python"; [ -x "$PY" ] || PY=python3
exec "$PY" "$DIR/p2_test.py" --images="$1" --output="$2"
