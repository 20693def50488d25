#!/usr/bin/env bash
# Problem 1 grading: bash hw2_p1.sh <image dir> <output csv>
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$DIR/.venv/bin/python"
[ -x "$PY" ] || PY=python3
if [ "$#" -ne 2 ]; then
    echo "usage: bash hw2_p1.sh <image dir> <output csv>" >&2
    exit 2
fi
exec "$PY" "$DIR/p1_test.py" --images "$1" --output "$2"
