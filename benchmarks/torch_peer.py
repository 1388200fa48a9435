"""A PyTorch peer of FusionNet for side-by-side timing (optional: needs ``torch``, extra ``torch-peer``).

The same architecture as :class:`fusionnet_keras.models.FusionNet` (Quan et al.
2016, Table 1, as the package builds it), written plainly with ``torch.nn``:
every conv block is a 3x3 "same" convolution, ReLU, batch norm; a level is
conv + residual block (three conv blocks and an identity skip) + conv; 2x2 max
pooling down, a 2x2 stride-2 transposed convolution + ReLU + batch norm up,
added to the encoder map of its level; a 1x1 convolution and a sigmoid out.
It runs the way a PyTorch user would run it for inference: ``eval()``,
``torch.inference_mode()``, channels-last memory format, and for bfloat16
``torch.autocast("cpu", torch.bfloat16)`` (batch norm folded by nobody).
Weights are random: throughput does not depend on them.

Used by ``benchmarks/precision.py`` (``--peer``), which times it in the same
process as fusionnet-keras, the variants taking turns. Alone::

    python benchmarks/torch_peer.py --size 512 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def available() -> str | None:
    """``None`` if torch imports, else the reason it does not (a one-line message).

    Sets ``OMP_WAIT_POLICY=PASSIVE`` first unless it is set: PyTorch's OpenMP threads otherwise spin
    at every barrier, which on shared or busy cores (and beside TensorFlow's own threads in one
    process) made a 192 px forward 200x slower (4 s instead of 0.02 s on a loaded 2-core machine).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError as err:
        return f"PyTorch peer skipped: torch is not installed ({err}); pip install 'fusionnet-keras[torch-peer]'"
    return None


def build(nb_filters=64, depth=4, seed=0):
    """The FusionNet peer (``torch.nn.Module``), random weights, in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class ConvBlock(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout))

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(*(ConvBlock(c, c) for _ in range(3)))

        def forward(self, x):
            return x + self.body(x)

    def level(cin, cout):
        return nn.Sequential(ConvBlock(cin, cout), Residual(cout), ConvBlock(cout, cout))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [nb_filters * 2**i for i in range(depth + 1)]
            self.down = nn.ModuleList(level(1 if i == 0 else widths[i - 1], widths[i]) for i in range(depth))
            self.pool = nn.MaxPool2d(2)
            self.bridge = level(widths[depth - 1] if depth else 1, widths[depth])
            self.ups = nn.ModuleList(nn.Sequential(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2),
                                                   nn.ReLU(inplace=True), nn.BatchNorm2d(widths[i]))
                                     for i in range(depth))
            self.up = nn.ModuleList(level(widths[i], widths[i]) for i in range(depth))
            self.out = nn.Conv2d(widths[0], 1, 1)

        def forward(self, x):
            skips = []
            for down in self.down:
                x = down(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bridge(x)
            for i in reversed(range(len(self.up))):
                x = self.up[i](self.ups[i](x) + skips[i])
            return torch.sigmoid(self.out(x))

    net = Net().eval()
    for module in net.modules():  # non-trivial inference statistics, as a trained network has
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net.to(memory_format=torch.channels_last)


class Peer:
    """Predicts one section like ``fusionnet_keras.predict(..., tta=1)``: mirror padding, one forward, crop."""

    def __init__(self, nb_filters=64, depth=4, pad=64, threads=None):
        import torch

        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        self.net = build(nb_filters, depth)
        self.pad, self.multiple = pad, 2**depth

    def predict(self, section, precision="float32"):
        import contextlib

        import torch

        h, w = section.shape
        extra = [(-(s + 2 * self.pad)) % self.multiple for s in (h, w)]
        widths = [(self.pad + e // 2, self.pad + e - e // 2) for e in extra]
        frame = np.pad(section, widths, mode="reflect").astype(np.float32)
        x = torch.from_numpy(frame)[None, None].contiguous(memory_format=torch.channels_last)
        cast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bfloat16"
                else contextlib.nullcontext())
        with torch.inference_mode(), cast:
            y = self.net(x).float()
        (top, _), (left, _) = widths
        return y[0, 0, top:top + h, left:left + w].numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--nb-filters", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(reason)
        return 0
    peer = Peer(args.nb_filters, args.depth)
    section = np.random.default_rng(0).random((args.size, args.size), dtype=np.float32)
    times = {p: [] for p in ("float32", "bfloat16")}
    for p in times:
        peer.predict(section, p)
    for _ in range(args.repeats):
        for p in times:
            t0 = time.perf_counter()
            peer.predict(section, p)
            times[p].append(time.perf_counter() - t0)
    for p, t in times.items():
        print(f"torch {p}: median {np.median(t):.2f} s ({', '.join(f'{s:.2f}' for s in t)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
