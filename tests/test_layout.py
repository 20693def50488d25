"""The repository's shape: the top level holds the entry points only, and no module (library,
script or test) imports an entry point; imports point down the floors (entry points,
``benchmarks`` and ``reporting``, then ``datasets``, then ``core``, then ``models``: data code uses the shared
machinery, never the other way); the README's layout table names every module; no code outside
``models`` branches on a model's name."""
import ast
import os

from tests.conftest import ROOT

ENTRY_POINTS = {"p1_train", "p1_test", "p1_tsne", "p2_train", "p2_test", "mean_iou_evaluate", "bench", "report"}
PACKAGES = ("core", "datasets", "models", "benchmarks", "reporting", "tests")
# The library's floors: a module imports its own floor or one below; ``benchmarks`` serves ``bench.py`` alone
# and ``reporting`` ``report.py`` alone, so they stand above the library (which never imports them).
FLOORS = {"models": 1, "core": 2, "datasets": 3, "benchmarks": 4, "reporting": 4}


def python_files():
    for folder in ("",) + PACKAGES:
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def imported_modules(path):
    tree = ast.parse(open(os.path.join(ROOT, path)).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_top_level_holds_only_the_entry_points():
    top = {n[:-3] for n in os.listdir(ROOT) if n.endswith(".py")}
    assert top == ENTRY_POINTS


def test_no_module_imports_an_entry_point():
    assert not ENTRY_POINTS & set(PACKAGES)  # a package named like a script would hide it from imports
    offenders = [(path, m) for path in python_files() for m in imported_modules(path)
                 if m.split(".")[0] in ENTRY_POINTS]
    assert offenders == []


def points_up(path, module):
    """Whether ``path`` (a file of a floor) importing ``module`` is an arrow that runs back up."""
    here, there = os.path.dirname(path), module.split(".")[0]
    return here in FLOORS and there in FLOORS and FLOORS[there] > FLOORS[here]


def test_imports_point_down_the_floors():
    assert points_up("core/plots.py", "datasets.masks") and points_up("datasets/p2.py", "benchmarks.row")
    assert points_up("core/plots.py", "reporting.markdown")
    assert not points_up("datasets/common.py", "core.cli") and not points_up("core/runs.py", "core.cli")
    offenders = [(path, m) for path in python_files() for m in imported_modules(path) if points_up(path, m)]
    assert offenders == []


def test_readme_layout_names_every_module():
    readme = open(os.path.join(ROOT, "README.md")).read()
    missing = [p for p in python_files() if not p.startswith("tests") and not p.endswith("__init__.py")
               and f"`{p}`" not in readme]
    assert missing == []


def model_names_in_logic(source, names, path="<source>"):
    """``(line, name)`` of every string constant equal to one of ``names`` that decides something: in a
    comparison, the test of an ``if`` / conditional expression / ``while`` / ``assert``, a subscript's
    index or a ``match`` case. Dict and list literals (``RECIPES``), call arguments, help text and
    docstrings are data."""
    found = set()
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
        elif isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)):
            parts = [node.test]
        elif isinstance(node, ast.Subscript):
            parts = [node.slice]
        elif isinstance(node, ast.MatchValue):
            parts = [node.value]
        else:
            continue
        found |= {(c.lineno, c.value) for part in parts for c in ast.walk(part)
                  if isinstance(c, ast.Constant) and c.value in names}
    return sorted(found)


def test_no_model_name_in_an_entry_points_logic():
    """What a model needs is asked of its registry entry (``models/registry.py``): no entry point, and no
    library module outside ``models/``, branches on a registered model's name."""
    from models import MODELS

    assert model_names_in_logic('if args.model == "fcn8s" or MODELS["fcn32s"].x:\n    pass\n', MODELS) == \
        [(1, "fcn32s"), (1, "fcn8s")]
    assert model_names_in_logic('RECIPES = {"a": dict(model="fcn8s")}\np.add_argument(help="fcn8s")\n', MODELS) == []
    offenders = [(path, *hit) for path in python_files() if os.path.dirname(path) not in ("models", "tests")
                 for hit in model_names_in_logic(open(os.path.join(ROOT, path)).read(), MODELS, path)]
    assert offenders == []
