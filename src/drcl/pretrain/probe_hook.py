"""The crop probe as a pre-training hook (``pretrain.probe.every: N``).

Every ``N`` iterations, and after the last, the online encoder is probed in eval mode on the
``pretrain.probe`` split (the tune split by default) with :mod:`drcl.evaluation.probe`; its train
mode is given back afterwards, and nothing in the training state changes (no gradient, BatchNorm
statistics untouched, the global RNG not drawn from). The crops are cut once per run, in
:meth:`ProbeHook.before_train`.

One row per probe goes to the run's ``metrics.jsonl`` (``iter`` plus ``probe/ncm/all``,
``probe/knn/rare``, ..., ``probe/std``, ``probe/erank``; accuracies in percent, mean over the
classes of a group) and the same scalars to TensorBoard (``tb/``). Rank 0 only.

The hook has detectron2's ``before_train / after_step / after_train`` shape, so it moves to the
engine's hook list unchanged once there is one.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from torch import nn

from drcl.engine.hooks import HookBase
from drcl.evaluation.probe import (
    ProbeData,
    evaluate_features,
    prepare_probe_data,
    probe_features,
    probe_net,
)
from drcl.utils.run_dir import RunDir

log = logging.getLogger(__name__)


def default_probe_split(train_ann: str, train_images: str) -> tuple[str, str]:
    """``annotations/tune.json`` and ``tune/`` beside the training json and images (the demo
    layout, ``drcl data make-demo``)."""
    ann = Path(train_ann).with_name("tune.json")
    images = Path(train_images).with_name("tune")
    if not (ann.is_file() and images.is_dir()):
        raise FileNotFoundError(
            f"pretrain.probe.every > 0: no tune split at {ann} / {images}; set "
            "pretrain.probe.ann and pretrain.probe.images"
        )
    return str(ann), str(images)


def probe_row(iteration: int, result: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics.jsonl`` row of one probe: ``probe/<classifier>/<group>``, std, erank."""
    row: dict[str, Any] = {"iter": iteration}
    for clf in ("ncm", "knn"):
        for group, acc in result.get(clf, {}).items():
            row[f"probe/{clf}/{group}"] = acc
    row["probe/std"] = result["std"]
    row["probe/erank"] = result["erank"]
    return row


class ProbeHook(HookBase):
    """Probe the model's online encoder every ``every`` iterations and at the end.

    Args:
        model: the pre-training model (its ``online`` encoder is read; see
            :func:`drcl.evaluation.probe.probe_net`).
        every: iterations between probes (> 0).
        max_iters: the last iteration (always probed).
        work_dir: the run folder (``metrics.jsonl``, ``tb/``).
        train_ann, train_images, eval_ann, eval_images: the jsons and image folders.
        readout: ``C2``..``C5`` or ``roi``.
        size, context, k, temperature, max_per_class: see
            :func:`drcl.evaluation.probe.run_probe`.
        enabled: False on ranks other than 0 (nothing is done there).
    """

    def __init__(
        self,
        model: nn.Module,
        every: int,
        max_iters: int,
        work_dir: str | Path,
        train_ann: str,
        train_images: str,
        eval_ann: str,
        eval_images: str,
        readout: str = "C5",
        size: int = 64,
        context: float = 0.1,
        k: int = 20,
        temperature: float = 0.07,
        max_per_class: int = 0,
        enabled: bool = True,
    ) -> None:
        if every < 1:
            raise ValueError(f"pretrain.probe.every: got {every}, expected >= 1 (0 = off)")
        self.net = probe_net(model)
        self.every, self.max_iters, self.work_dir = every, max_iters, Path(work_dir)
        self.paths = (train_ann, train_images, eval_ann, eval_images)
        self.readout, self.size, self.context = str(readout), size, context
        self.k, self.temperature, self.enabled = k, temperature, enabled
        self.max_per_class = max_per_class
        self.data: ProbeData | None = None
        self._tb: Any = None

    def before_train(self) -> None:
        """Cut the crops (once per run) and open the TensorBoard writer."""
        if not self.enabled:
            return
        self.data = prepare_probe_data(
            *self.paths, size=self.size, context=self.context, max_per_class=self.max_per_class
        )
        log.info(
            "probe: %d train / %d eval crops, every %d iterations",
            len(self.data.train),
            len(self.data.eval),
            self.every,
        )
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.work_dir / "tb"))
        except ImportError:  # tensorboard is a dependency; stay usable without it
            self._tb = None

    def after_step(self, iteration: int, progress: float) -> None:
        """Probe at multiples of ``every`` and at ``max_iters``."""
        if not self.enabled or self.data is None:
            return
        if iteration % self.every and iteration != self.max_iters:
            return
        self.log(probe_row(iteration, self.probe()))

    def probe(self) -> dict[str, Any]:
        """One probe of the current online encoder (modes restored afterwards)."""
        assert self.data is not None, "before_train() prepares the crops"
        train, evaluation = probe_features(self.net, self.data, [self.readout])[self.readout]
        return evaluate_features(
            train, evaluation, self.data, k=self.k, temperature=self.temperature
        )

    def log(self, row: dict[str, Any]) -> None:
        """Append ``row`` to ``metrics.jsonl`` (one line, one write) and to TensorBoard."""
        clean = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()
        }
        with open(RunDir(self.work_dir).metrics, "a") as fh:
            fh.write(json.dumps(clean) + "\n")
        if self._tb is not None:
            for key, value in clean.items():
                if key != "iter" and value is not None:
                    self._tb.add_scalar(key, value, row["iter"])
            self._tb.flush()
        shown = {k: v for k, v in clean.items() if k in ("probe/ncm/all", "probe/ncm/rare")}
        log.info("probe at iteration %d: %s", row["iter"], shown)

    def after_train(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
