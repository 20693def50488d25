"""Shared fixtures: a small synthetic hw2_data tree, generated once per test session."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """``<tmp>/data`` with p1_data (5 train / 3 val per class) and p2_data (6 train, 3+3 val tiles)."""
    from datasets.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate(str(out), seed=0, p1_train_per_class=5, p1_val_per_class=3, p2_train=6, p2_val=3, p2_size=512)
    return out
