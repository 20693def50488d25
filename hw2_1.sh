#!/usr/bin/env bash
# The course's Problem 1 command: bash hw2_1.sh <test image dir> <existing output folder>
# Writes <output folder>/test_pred.csv with checkpoints/p1_best.pt ($P1_CKPT when set): hw2_p1.sh.
set -euo pipefail
[ "$#" -eq 2 ] || { echo "usage: bash hw2_1.sh <image dir> <output folder>" >&2; exit 2; }
DIR="$(CDPATH='' cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
exec bash "$DIR/hw2_p1.sh" "$1" "$2"
