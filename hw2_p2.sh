#!/usr/bin/env bash
# Problem 2 grading: bash hw2_p2.sh [--model fcn32s|fcn8s] <image dir> <output dir>
# Writes <id>_mask.png for every <id>_sat.jpg; the checkpoint is $P2_CKPT, else the model's default
# checkpoints/p2_<model>_best.pt (fcn8s unless --model; downloaded when missing: core/hub.py).
set -euo pipefail
MODEL=()
if [ "$#" -eq 4 ] && [ "$1" = --model ]; then MODEL=(--model="$2"); shift 2; fi
[ "$#" -eq 2 ] || { echo "usage: bash hw2_p2.sh [--model fcn32s|fcn8s] <image dir> <output dir>" >&2; exit 2; }
DIR="$(CDPATH='' cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
. "$DIR/core/python.sh"
exec "$PY" "$DIR/p2_test.py" ${MODEL[@]+"${MODEL[@]}"} --images="$1" --output="$2"
