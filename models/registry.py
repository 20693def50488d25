"""The model registry: each name says what its model is for, so scripts need no model names.

An entry carries its network class (built with ``get_model(name, **kwargs)``, the way
checkpoints rebuild it), its problem (``p1`` / ``p2``: which training script offers it as
``--model``), its fixed input size if it has one (the class's ``input_size`` attribute, the one
its ``forward`` checks), an input-size rule checked without building the model, and its pretrained
backbone (``None``: none; else a ``models.backbones.Backbone``, e.g. ``VGG16_BN``: the weights it
takes, read by ``core.pretrained.load_backbone_state_dict``, and how they are copied in).
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional

PROBLEMS = ("p1", "p2")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    problem: str
    backbone: Any = None
    check_size: Optional[Callable[[int], Any]] = None  # raises ValueError for a size the model cannot take

    @property
    def input_size(self):
        """The one input side the model takes, or None when it takes any (above its own minimum)."""
        return getattr(self.cls, "input_size", None)

    def check_input_size(self, size):
        """Return ``size`` (a square input's side) if the model can take it; ValueError naming the rule otherwise."""
        fixed = self.input_size
        if fixed and size != fixed:
            raise ValueError(f"{self.name} trains on {fixed}x{fixed} inputs only, got {size}")
        if self.check_size is not None:
            self.check_size(size)
        return size

    def __call__(self, **kwargs):
        return self.cls(**kwargs)


MODELS = {}


def register(name, cls, problem, backbone=None, check_size=None):
    """Add ``cls`` to the registry as ``name``; the entry. ValueError for a taken name or an unknown problem."""
    if name in MODELS:
        raise ValueError(f"model name {name!r} is already registered (to {MODELS[name].cls.__name__})")
    if problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {', '.join(PROBLEMS)}, got {problem!r}")
    MODELS[name] = ModelEntry(name, cls, problem, backbone, check_size)
    return MODELS[name]


def get_model(name, **kwargs):
    """Build the model registered as ``name`` with its constructor ``kwargs``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


def model_names(problem):
    """The registered names of ``problem``'s models, in registration order (the ``--model`` choices)."""
    return [name for name, entry in MODELS.items() if entry.problem == problem]
