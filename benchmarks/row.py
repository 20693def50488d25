"""One row of the table, and the figures every section shares."""
from core.inputs import IMAGENET_MEAN, IMAGENET_STD

IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
TILE_SIZE = 512  # the DeepGlobe tiles of the homework are 512x512


def row(key, name, unit, naive, ours, target, higher_is_better=True, target_kind="speedup", **details):
    """One table row. ``speedup`` is ours over naive (as throughput, whatever the unit); the
    target is a minimum speed-up (``speedup``) or a bound on ours (``at_least`` / ``at_most``).
    A figure that was not measured (no naive, no CUDA) is None."""
    speedup = None
    if naive is not None and ours is not None and naive > 0 and ours > 0:
        speedup = ours / naive if higher_is_better else naive / ours
    value = speedup if target_kind == "speedup" else ours
    meets = None
    if target is not None and value is not None:
        meets = value <= target if target_kind == "at_most" else value >= target
    return {"key": key, "name": name, "unit": unit, "naive": naive, "ours": ours, "speedup": speedup,
            "target": target, "target_kind": target_kind, "meets_target": meets,
            "higher_is_better": higher_is_better, **details}
