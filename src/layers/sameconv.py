"""'Same'-padded convolutions that skip the kernel taps which can only ever read padding.

On a feature map smaller than the kernel's reach (effnet-b0 at 32 px ends on 2 x 2 and 1 x 1 maps with 5 x 5
depthwise kernels), most taps of a 'same' convolution multiply zeros. Cropping the kernel to the taps that reach
the input, and the padding with it, gives the same output and the same gradients (the cropped-away taps would
get zero gradient anyway) with far less work. On CPU, oneDNN's depthwise backward on such maps is very slow
(pytorch/pytorch#13716): at 32 px an effnet-b0 training step takes 1.43x less time on one thread, an epoch of
the default run about 1.15x less on two (``NOTES.md``).

Where the padding is the same on both sides (stride 1, odd kernels: most of an EfficientNet), the convolution pads
itself instead of reading a padded copy of its input (`F.pad` allocates and writes the whole map before every such
convolution: on a GPU a memory-bound kernel per layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from efficientnet_pytorch.utils import Conv2dDynamicSamePadding
from torch import nn


def useful_taps(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int, int]:
    """Along one axis of a TensorFlow-'same' convolution: the kernel taps that reach the input, and the padding.

    Args:
        size: input length (pixels).
        kernel, stride, dilation: the convolution's along this axis.

    Returns:
        ``(first_tap, taps, pad_before, pad_after)``: the convolution with the kernel cut to ``taps`` taps from
        ``first_tap`` on, over the input padded by ``pad_before`` / ``pad_after`` (``pad_after`` may be negative:
        a crop), has the same output (``ceil(size / stride)`` long) as the full one.
    """
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    before = pad // 2
    first = max(0, math.ceil((before - (out - 1) * stride) / dilation))  # the last output still reaches input
    last = min(kernel - 1, (size - 1 + before) // dilation)  # the first output still reaches input
    taps = last - first + 1
    pad_before = before - first * dilation
    pad_after = (out - 1) * stride + (taps - 1) * dilation + 1 - size - pad_before
    return first, taps, pad_before, pad_after


class CroppedSameConv2d(Conv2dDynamicSamePadding):
    """efficientnet-pytorch's `Conv2dDynamicSamePadding` (TensorFlow 'same' padding for any input size) that uses
    only the kernel taps reaching the input: (N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride)),
    equal to the library module's output up to float rounding. Same parameters and state dict keys.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.weight.shape[-2:], self.stride, self.dilation
        h0, th, top, bottom = useful_taps(x.shape[-2], kh, sh, dh)
        w0, tw, left, right = useful_taps(x.shape[-1], kw, sw, dw)
        weight = self.weight if (th, tw) == (kh, kw) else self.weight[:, :, h0 : h0 + th, w0 : w0 + tw]
        if top == bottom >= 0 and left == right >= 0:  # the convolution pads itself: no padded copy of x
            return F.conv2d(x, weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, [left, right, top, bottom])  # uneven ('same' at stride 2) or a crop: one copy
        return F.conv2d(x, weight, self.bias, self.stride, 0, self.dilation, self.groups)


def crop_same_convs(net: nn.Module) -> int:
    """Turns every `Conv2dDynamicSamePadding` of ``net`` into a `CroppedSameConv2d`, in place (the class changes;
    parameters, buffers and state dict keys stay). Returns how many were changed."""
    count = 0
    for module in net.modules():
        if type(module) is Conv2dDynamicSamePadding:
            module.__class__ = CroppedSameConv2d
            count += 1
    return count
