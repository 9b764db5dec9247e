"""Keep BatchNorm running statistics for the views the exported backbone should describe.

The patch-masked copy of view 1 (SR, AR) is half zeros: its batch statistics are not those of real
images. The encoder still normalises it with its own batch statistics (training-mode BN), but it
must not move ``running_mean`` / ``running_var`` / ``num_batches_tracked``, which the fine-tuned
detector inherits (``docs/method.md``, "BN statistics").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Inside the block, BN layers of ``module`` in training mode use batch statistics but leave
    their running statistics untouched.

    torch's ``_BatchNorm.forward`` passes no running buffers to ``F.batch_norm`` (and does not
    count the batch) when ``training and not track_running_stats``; this flips that flag for the
    block and restores it afterwards, also when the block raises. Works for ``BatchNorm1d/2d`` and
    ``SyncBatchNorm``; ``FrozenBatchNorm2d`` has no running update anyway.
    """
    flipped = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    for m in flipped:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in flipped:
            m.track_running_stats = True
