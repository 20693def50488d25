"""Small models and checkpoints the core tests build (a width-16 classifier on 32x32 inputs)."""
import torch

from core import checkpoint, runtime
from models import get_model

CPU = torch.device("cpu")
KWARGS = {"num_classes": 50, "width": 16, "img_size": 32}
PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def classifier(seed=0):
    torch.manual_seed(seed)
    return get_model("classifier", **KWARGS)


def inference_ckpt(model, problem="p1", **meta):
    return checkpoint.inference_state(problem, "classifier", KWARGS, model, PREPROCESS, **{"epoch": 1, **meta})


def training_ckpt(model, optimizer=None, epoch=2, **args):
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    saved = {"lr": 0.1, "epochs": 4, "lr_schedule": "none", "device": "cpu", "workers": 0, "width": 16, **args}
    return checkpoint.training_state(inference_ckpt(model, epoch=epoch), optimizer=optimizer, lr_scheduler=None,
                                     scaler=None, phase="sgd", epoch=epoch, best_score=0.5, args=saved,
                                     rng=[runtime.rng_state()], world_size=1)
