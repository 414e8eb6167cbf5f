"""The U-Net wiring of SaShiMi, written once for convolution mode and step mode alike.

A tier is the part of the network that runs at one rate. Each non-centre tier has a down part
(the layers before its DownPool) and an up part (its UpPool's output combined with what the
down part stored, then its blocks); the centre has blocks only. Both modes run these same
functions: convolution mode over whole sequences, step mode over one step of the tier (the
UpPool output then comes from the slower tier's previous step). ``run(layer, x)`` is how a
layer is applied: ``layer(x)`` in convolution mode, the layer's recurrent step in step mode.

The paper's two wirings (state-spaces/s4, models/sashimi/sashimi.py):

* ``unet: false`` (its autoregressive models): no down-path blocks, so a tier stores only its
  input s (the activation just before its DownPool). Up: ``x = UpPool(·) + s; x = blocks(x) + x``.
* ``unet: true``: the tier's input and the output of every down-path layer are stored; the
  UpPool output and then each up-path block's output add the stored activations in reverse
  (mirror-image layers), with no extra tier residual.

The centre is ``blocks(x) + x`` in both.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Run = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def down(layers: nn.ModuleList, x: torch.Tensor, run: Run) -> tuple[torch.Tensor, list]:
    """-> (the input for this tier's DownPool, the activations the up part adds back)."""
    stored = [x]
    for layer in layers:
        x = run(layer, x)
        stored.append(x)
    return x, stored


def up(blocks: nn.ModuleList, unpooled: torch.Tensor, stored: list, run: Run, unet: bool) -> torch.Tensor:
    """The tier's output from its UpPool's output and what ``down`` stored (consumed)."""
    x = unpooled + stored.pop()
    if unet:
        for layer in blocks:
            x = run(layer, x) + stored.pop()
        return x
    return centre(blocks, x, run)


def centre(blocks: nn.ModuleList, x: torch.Tensor, run: Run) -> torch.Tensor:
    """blocks(x) + x: the centre tier, and the up part of a ``unet: false`` tier."""
    x_in = x
    for layer in blocks:
        x = run(layer, x)
    return x + x_in
