#!/usr/bin/env bash
# The course's Problem 2 baseline: bash hw2_2.sh <image dir> <output dir>
# FCN32s masks with checkpoints/p2_fcn32s_best.pt ($P2_CKPT when set, if it holds an FCN32s): hw2_p2.sh.
set -euo pipefail
[ "$#" -eq 2 ] || { echo "usage: bash hw2_2.sh <image dir> <output dir>" >&2; exit 2; }
DIR="$(CDPATH='' cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
exec bash "$DIR/hw2_p2.sh" --model fcn32s "$1" "$2"
