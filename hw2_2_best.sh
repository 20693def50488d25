#!/usr/bin/env bash
# The course's Problem 2 improved model: bash hw2_2_best.sh <image dir> <output dir>
# FCN8s masks with checkpoints/p2_fcn8s_best.pt ($P2_CKPT when set, if it holds an FCN8s): hw2_p2.sh.
set -euo pipefail
[ "$#" -eq 2 ] || { echo "usage: bash hw2_2_best.sh <image dir> <output dir>" >&2; exit 2; }
DIR="$(CDPATH='' cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
exec bash "$DIR/hw2_p2.sh" --model fcn8s "$1" "$2"
