"""The one metric: a confusion matrix over a whole split.

P2 mIoU is counted exactly as the course grader (DLCV hw2 ``mean_iou_evaluate.py``) counts it:
for each class i in 0..5, ``IoU_i = TP / (TP + FP + FN)`` over all pixels of all images
together; pixels labelled 6 (unknown) still count as false positives for the class predicted,
and class 6 itself is not scored. P1 accuracy is the trace of the same matrix over its sum.
Training, ``p2_test.py`` and ``mean_iou_evaluate.py`` all use this module.
"""
import math

import torch
import torch.distributed as dist

SCORED_CLASSES = tuple(range(6))  # the grader scores classes 0..5; 6 (unknown) is not scored


class ConfusionMatrix:
    """``mat[t, p]`` counts pixels (or images) of true class ``t`` predicted as ``p``.

    Targets outside ``0..num_classes-1`` (e.g. 255 for padding) are ignored.
    """

    def __init__(self, num_classes, device="cpu"):
        self.num_classes = num_classes
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, target, pred):
        target = torch.as_tensor(target).to(self.mat.device, non_blocking=True).flatten()
        pred = torch.as_tensor(pred).to(self.mat.device, non_blocking=True).flatten()
        n = self.num_classes
        # Ignored targets go to an extra row n that is dropped; uint8 inputs stay uint8 when the
        # indices fit (7 classes: n*(n+1) = 56), which avoids int64 copies of every pixel.
        if not (target.dtype == pred.dtype == torch.uint8 and n * (n + 1) <= 256):
            target, pred = target.long(), pred.long()
            target = target.masked_fill(target < 0, n)
        idx = target.clamp(max=n) * n + pred
        self.mat += torch.bincount(idx, minlength=n * (n + 1))[: n * n].reshape(n, n)

    def reduce_from_all_processes(self):
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat)
        return self

    def iou(self):
        """Per-class IoU (float64, CPU); NaN where a class is absent from targets and predictions."""
        mat = self.mat.double().cpu()
        tp = mat.diag()
        denom = mat.sum(0) + mat.sum(1) - tp
        return tp / denom

    def mean_iou(self, classes=SCORED_CLASSES):
        """Mean IoU over ``classes``; classes absent from both sides are excluded (never NaN).

        Returns ``(miou, per_class, absent)``: ``per_class`` maps class -> IoU (NaN if absent).
        """
        iou = self.iou()
        per_class = {c: float(iou[c]) for c in classes}
        present = [v for v in per_class.values() if not math.isnan(v)]
        absent = [c for c, v in per_class.items() if math.isnan(v)]
        miou = sum(present) / len(present) if present else float("nan")
        return miou, per_class, absent

    def accuracy(self):
        total = int(self.mat.sum())
        return float(self.mat.diag().sum()) / total if total else float("nan")

    def per_class_accuracy(self):
        """Recall of each true class (NaN where the class has no sample)."""
        mat = self.mat.double().cpu()
        return mat.diag() / mat.sum(1)

    def grader_report(self):
        """The grader's output lines (``class #i : x.xxxxx`` then ``mean_iou: x.xxxxxx``)."""
        miou, per_class, absent = self.mean_iou()
        lines = []
        for c, v in per_class.items():
            if math.isnan(v):
                lines.append(f"class #{c} : absent (in neither ground truth nor prediction; excluded from mean_iou)")
            else:
                lines.append(f"class #{c} : {v:1.5f}")
        lines += ["", f"mean_iou: {miou:f}"]
        return "\n".join(lines)
