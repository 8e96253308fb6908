"""The tensor contract of the ``clickmask`` model, in one place (no dependencies).

Every client, config writer, exporter, server adapter and predictor imports these names, so
they cannot drift apart. Triton adds the batch dimension to every tensor.

=============  =====  ============  ===============================================
tensor         dtype  per request   meaning
=============  =====  ============  ===============================================
``image``      UINT8  [3, S, S]     RGB crop, resized with aspect kept, zero padded
``clicks``     UINT8  [2, S, S]     0/1 disks: channel 0 positive, channel 1 negative
``prev_mask``  UINT8  [1, S, S]     previous probability x 255 (zeros at first)
``mask_prob``  UINT8  [1, S, S]     output: object probability x 255
=============  =====  ============  ===============================================

S is fixed per deployment and advertised by the model config parameter ``input_size``.
A pixel is object when its probability is above ``PROB_THRESHOLD``.
"""
from __future__ import annotations

MODEL_NAME = "clickmask"
IMAGE = "image"
CLICKS = "clicks"
PREV_MASK = "prev_mask"
MASK_PROB = "mask_prob"

INPUT_NAMES = (IMAGE, CLICKS, PREV_MASK)
"""Input tensor names, in the order the networks take them."""
INPUT_CHANNELS = {IMAGE: 3, CLICKS: 2, PREV_MASK: 1}
OUTPUT_NAME = MASK_PROB
OUTPUT_CHANNELS = 1
DTYPE = "UINT8"
"""Triton data type of every tensor (numpy uint8)."""
SIZE_PARAMETER = "input_size"
"""Model config parameter that advertises S."""
DEFAULT_SIZE = 320
PROB_THRESHOLD = 0.5
"""A pixel is object when ``mask_prob / 255 > PROB_THRESHOLD``."""
DISK_RADIUS = 5
"""Click disk radius in network pixels."""


def input_shape(name: str, size: int) -> tuple[int, int, int]:
    """Per-request shape of input ``name`` at size S."""
    return (INPUT_CHANNELS[name], size, size)


def output_shape(size: int) -> tuple[int, int, int]:
    return (OUTPUT_CHANNELS, size, size)
