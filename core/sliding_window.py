"""The one P2 predictor: class maps (or blended logits) of images of any size, computed from
windows of the model's input size, in bounded memory.

    for key, classes in predict_masks(model, images, mean=pre["mean"], std=pre["std"], device=device):
        ...  # classes: the H x W uint8 class map of the (key, uint8 3 x H x W image) given

    logits = sliding_logits(model, inputs)  # a prepared float batch (validation): N x K x H x W

Geometry. Each image is covered by ``window`` x ``window`` windows: the model's native size
(``native_window``: FCN8s works only at 512, where its skip paths meet; FCN32s takes any size,
512 by default). Along each axis the windows are evenly spaced from the first pixel to the
last, neighbours overlapping by at least ``overlap`` x ``window`` pixels (``window_starts``).
An axis shorter than the window is padded by reflection (mirrored without repeating the edge
pixel, as often as needed; split evenly between both sides) and the padding is cropped from
the output. Reflection, not zeros: the network sees ground texture continued at the border
instead of a frame of one colour; zero raw pixels are black, the colour of DeepGlobe's
no-data areas (class "unknown"), and zero after normalisation is a flat grey no training
tile contains. Images larger than the window need no padding: the last window ends at the
last pixel.

Blending. Where windows overlap, their logits are averaged per pixel with weights
(``window_weights``): ``uniform`` (a plain mean) or ``gaussian`` (nnU-Net's importance map,
a Gaussian of sigma = window / 8 around the window's centre, so a pixel is decided mostly
by the windows that see it far from their borders, where padding and missing context
hurt a fully convolutional network most). An image covered by a single window keeps that
window's logits unchanged, so a 512 x 512 tile gives exactly ``model(tile).argmax(1)``.

Memory. Windows of one or many images are batched up to ``batch_size`` windows. An image is
assembled one row of windows at a time: a float32 buffer of (K + 1) x window x W (weighted
logit sums and the weight sum, K classes) holds the current row; rows no later window
reaches are blended, turned into uint8 classes and the buffer moves down. Besides the
decoded image and its class map (3 + 1 bytes per pixel), memory is the window batch plus
4 (K + 1) window bytes per image column: 8 x 512 x 14000 x 4 B = 229 MB for a 14000-wide
image, where a whole-image K x H x W float buffer would take 5.5 GB.
"""
import torch

from core.inputs import model_inputs
from core.runtime import autocast

WEIGHTINGS = ("gaussian", "uniform")
DEFAULT_WINDOW = 512  # the DeepGlobe tiles of the homework are 512x512
GAUSSIAN_SIGMA = 1 / 8  # of the window side, nnU-Net's choice


def native_window(model, window=None):
    """The window side for ``model``: its fixed ``input_size`` if it has one (FCN8s: 512),
    else ``window`` or 512. ValueError if ``window`` contradicts a fixed input size."""
    fixed = getattr(model, "input_size", None)
    if fixed and window and window != fixed:
        raise ValueError(f"{type(model).__name__} takes only {fixed}x{fixed} inputs, not a {window} window")
    return fixed or window or DEFAULT_WINDOW


def window_bytes(model, window):
    """An estimate (a lower bound) of the memory one ``window`` x ``window`` window takes:
    the widest early activation (the first conv's output at its padded size: FCN32s pads by
    100) held about three times, float32; the uint8 and float32 input; and the canvas row
    buffer of (K + 1) x window x window float32 (K: the last layer's outputs). Used to refuse
    a window that cannot fit before any allocation (a 20000 window needs tens of GB)."""
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    first_channels, pad = (convs[0].out_channels, convs[0].padding[0]) if convs else (3, 0)
    classes = convs[-1].out_channels if convs else 7
    return 4 * (3 * first_channels * (window + 2 * pad) ** 2 + (classes + 1) * window ** 2) + 15 * window ** 2


def available_bytes(device):
    """Free memory of ``device`` in bytes (CUDA: ``mem_get_info``; CPU: ``MemAvailable``), or
    None where it cannot be read."""
    device = torch.device(device)
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError, RuntimeError):
        return None


def window_starts(length, window, overlap):
    """Start offsets of the windows covering ``0..length`` (``length >= window``): evenly
    spaced from 0 to ``length - window``, neighbours overlapping by >= ``overlap * window``."""
    if length <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    n = -(-(length - window) // stride) + 1
    return [(i * (length - window)) // (n - 1) for i in range(n)]


def window_weights(window, weighting):
    """``window x window`` float32 blending weights (all > 0)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if weighting == "uniform":
        return torch.ones(window, window)
    d = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-0.5 * (d / (GAUSSIAN_SIGMA * window)) ** 2)
    return torch.outer(g, g).float()


def reflect_index(n, before, after):
    """Indices of ``n`` pixels extended by ``before`` / ``after`` mirrored ones (edge pixel not
    repeated, period 2(n - 1), so any padding works; a single pixel is repeated)."""
    i = torch.arange(-before, n + after)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def pad_to_window(image, window):
    """``(C x H' x W' image, top, left)``: axes shorter than ``window`` padded by reflection."""
    offsets = []
    for dim in (1, 2):
        n = image.shape[dim]
        before = max(0, window - n) // 2
        after = max(0, window - n) - before
        if before or after:
            image = image.index_select(dim, reflect_index(n, before, after).to(image.device))
        offsets.append(before)
    return image, offsets[0], offsets[1]


class _Canvas:
    """One image being assembled, one row of windows at a time (see Memory above).

    ``out`` is the H x W uint8 class map on the CPU (``classes=True``) or the K x H x W
    float32 blended logits on the logits' device.
    """

    def __init__(self, key, image, window, overlap, classes):
        self.key, self.window, self.classes = key, window, classes
        self.height, self.width = image.shape[1:]
        self.padded, self.top, self.left = pad_to_window(image, window)
        ys = window_starts(self.padded.shape[1], window, overlap)
        xs = window_starts(self.padded.shape[2], window, overlap)
        self.windows = [(y, x) for y in ys for x in xs]
        self.remaining = len(self.windows)
        self.y0, self.buf, self.out = 0, None, None

    def crops(self):
        w = self.window
        for y, x in self.windows:
            yield y, x, self.padded[:, y:y + w, x:x + w]

    def add(self, y, x, logits, weights):
        """Blend one window's ``K x window x window`` logits in; True when the image is done."""
        w = self.window
        if self.buf is None:
            k = logits.shape[0]
            self.buf = torch.zeros(k + 1, w, self.padded.shape[2], dtype=torch.float32, device=logits.device)
            self.out = (torch.empty(self.height, self.width, dtype=torch.uint8) if self.classes else
                        torch.empty(k, self.height, self.width, dtype=torch.float32, device=logits.device))
        if len(self.windows) == 1:
            weights = torch.ones((), device=logits.device)  # nothing to blend: keep the logits exactly
        if y > self.y0:
            self._finish(y)
        self.buf[:-1, :, x:x + w].addcmul_(logits, weights)
        self.buf[-1, :, x:x + w] += weights
        self.remaining -= 1
        if self.remaining:
            return False
        self._finish(self.y0 + w)
        self.buf = self.padded = None
        return True

    def _finish(self, y):
        """Blend padded rows ``y0..y`` (no later window reaches them) into ``out``."""
        n = y - self.y0
        r0, r1 = max(self.y0, self.top), min(y, self.top + self.height)
        if r1 > r0:
            rows = self.buf[:, r0 - self.y0:r1 - self.y0, self.left:self.left + self.width]
            if self.classes:  # dividing by the (positive) weight sum would not change the argmax
                self.out[r0 - self.top:r1 - self.top] = rows[:-1].argmax(0).to(torch.uint8).cpu()
            else:
                self.out[:, r0 - self.top:r1 - self.top] = rows[:-1] / rows[-1:]
        if self.remaining:  # move the unfinished rows up (a copy of the overlap, not of the buffer)
            rest = self.buf[:, n:].clone()
            self.buf[:, :rest.shape[1]] = rest
            self.buf[:, rest.shape[1]:] = 0
        self.y0 = y


def _blend(model, images, window, overlap, weighting, batch_size, prepare, dtype, classes):
    """Yield the finished ``_Canvas`` of each ``(key, C x H x W image)``, in order."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    weights = window_weights(window, weighting)
    batch = []

    def run():
        crops = [crop for _, _, _, crop in batch]
        if crops[0].stride(0) == 1:  # a decoded H x W x 3 image seen as 3 x H x W: keep channels last
            stacked = torch.stack([crop.permute(1, 2, 0) for crop in crops]).permute(0, 3, 1, 2)
        else:
            stacked = torch.stack(crops)
        inputs = prepare(stacked)
        with autocast(inputs.device, dtype):
            logits = model(inputs)
        if tuple(logits.shape[-2:]) != (window, window):
            raise ValueError(f"{type(model).__name__} returned {tuple(logits.shape)} logits for {window}x{window} "
                             "windows; a segmentation model must keep the input size")
        w = weights.to(logits.device)
        finished = [canvas for (canvas, y, x, _), one in zip(batch, logits) if canvas.add(y, x, one, w)]
        batch.clear()
        return finished

    with torch.inference_mode():
        for key, image in images:
            canvas = _Canvas(key, image, window, overlap, classes)
            for y, x, crop in canvas.crops():
                batch.append((canvas, y, x, crop))
                if len(batch) == batch_size:
                    yield from run()
        if batch:
            yield from run()


def predict_masks(model, images, *, mean, std, window=None, overlap=0.25, weighting="gaussian", batch_size=8,
                  device="cpu", dtype=None, channels_last=False):
    """Yield ``(key, H x W uint8 class map on the CPU)`` for each ``(key, uint8 3 x H x W image)``
    of the iterable ``images``, in order, reading it lazily.

    ``model`` is in eval mode on ``device``; ``mean``/``std`` the checkpoint's normalisation
    (``core.inputs.to_float`` is applied to each uint8 window batch on the device); ``dtype``
    the autocast dtype (None: fp32); ``channels_last`` the memory format of the window batch.
    """
    window = native_window(model, window)
    device = torch.device(device)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(std, dtype=torch.float32, device=device)

    def prepare(crops):
        return model_inputs(crops.to(device, non_blocking=True), mean, std, channels_last=channels_last)

    for canvas in _blend(model, images, window, overlap, weighting, batch_size, prepare, dtype, classes=True):
        yield canvas.key, canvas.out.numpy()


def sliding_logits(model, x, *, window=None, overlap=0.25, weighting="gaussian", batch_size=8):
    """Blended float32 logits ``N x K x H x W`` of a prepared (normalised, on-device) float
    batch ``x`` of any size: ``engine.evaluate``'s ``forward`` for validation. A batch of the
    window's size is passed to the model as it is."""
    window = native_window(model, window)
    if tuple(x.shape[-2:]) == (window, window):
        return model(x)
    images = ((n, image) for n, image in enumerate(x))
    canvases = _blend(model, images, window, overlap, weighting, batch_size, lambda crops: crops, None, classes=False)
    return torch.stack([canvas.out for canvas in canvases])
