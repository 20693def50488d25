# Sourced by the grading scripts (hw2_p1.sh, hw2_p2.sh) with DIR set to the repository: sets PY to
# the Python that runs the repo (.venv's, else python3), or stops with one line saying how to set
# it up, instead of a ModuleNotFoundError traceback in a fresh clone.
PY="$DIR/.venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3 || true)"
if [ -z "$PY" ] || ! "$PY" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("torch", "torchvision", "numpy", "PIL", "tqdm")))' 2>/dev/null; then
    echo "error: no Python with torch for $DIR (neither $DIR/.venv nor ${PY:-python3} has it); set it up with: make -C '$DIR' venv" >&2
    exit 1
fi
