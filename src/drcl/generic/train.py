"""Supervised, class-balanced pre-training of the generic backbone; torchvision-layout export.

The ResNet is torchvision's own (``resnet18(num_classes=K)``, trainable BatchNorm), so the saved
state dict (``conv1.weight``, ``bn1.*``, ``layer1..4.*``, ``fc.*``) loads with
``model.weights=PATH`` exactly like an ImageNet checkpoint would (``fc`` is dropped there).
Images are normalised with ImageNet's mean and std, as torchvision's detection transform does.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet

from drcl.engine.cost import CostMeter
from drcl.generic.data import load_split, make_generic_dataset
from drcl.generic.job import WEIGHTS, GenericJob
from drcl.generic.recipe import GenericRecipe
from drcl.utils.io import atomic_write_json, read_json
from drcl.utils.run_dir import RunDir
from drcl.utils.weights import save_state_dict

log = logging.getLogger(__name__)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
DEPTHS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}


def _to_input(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float, ImageNet-normalised."""
    return (images.permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 1/8 of the side (reflect padding)."""
    b, _, h, w = x.shape
    pad = h // 8
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    offs = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen)
    return torch.stack([padded[i, :, y : y + h, x0 : x0 + w] for i, (y, x0) in enumerate(offs)])


def _optimizer(model: nn.Module, recipe: GenericRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay,
            nesterov=True,
        )  # fmt: skip
    raise ValueError(f"generic.optimizer: got {recipe.optimizer!r}, allowed: sgd, adamw")


def _lr_at(it: int, recipe: GenericRecipe) -> float:
    # 5% linear warm-up, then cosine to 0
    warm = max(1, recipe.iters // 20)
    if it < warm:
        return recipe.lr * (it + 1) / warm
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * (it - warm) / max(1, recipe.iters - warm)))


def class_factors(data_dir: str | Path) -> np.ndarray:
    """(K, 2) int64: the texture and shape index of every class (``<texture>_<shape>`` names)."""
    classes = read_json(Path(data_dir) / "classes.json")["classes"]
    textures = sorted({c.split("_", 1)[0] for c in classes})
    shapes = sorted({c.split("_", 1)[1] for c in classes})
    return np.array(
        [[textures.index(c.split("_", 1)[0]), shapes.index(c.split("_", 1)[1])] for c in classes]
    )


def _loss(logits: torch.Tensor, labels: torch.Tensor, factors: np.ndarray | None) -> torch.Tensor:
    """Cross-entropy over the classes, or (``head: factors``) over texture and shape apart.

    Factors: logits (B, T + S) are texture logits then shape logits; the loss is the sum of the
    two cross-entropies, so each factor sees every image of the batch as an example.
    """
    if factors is None:
        return nn.functional.cross_entropy(logits, labels)
    f = torch.from_numpy(factors)[labels]  # (B, 2)
    t = int(factors[:, 0].max()) + 1
    return nn.functional.cross_entropy(logits[:, :t], f[:, 0]) + nn.functional.cross_entropy(
        logits[:, t:], f[:, 1]
    )


def _predict(logits: torch.Tensor, factors: np.ndarray | None) -> torch.Tensor:
    """Class index from class logits, or from the best texture and shape (``head: factors``)."""
    if factors is None:
        return logits.argmax(1)
    t = int(factors[:, 0].max()) + 1
    pair = torch.stack([logits[:, :t].argmax(1), logits[:, t:].argmax(1)], dim=1)  # (B, 2)
    match = (pair[:, None, :] == torch.from_numpy(factors)[None]).all(-1)  # (B, K)
    return match.float().argmax(1)


@torch.no_grad()
def accuracy(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    batch: int = 128,
    factors: np.ndarray | None = None,
) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on uint8 images ``(N, H, W, 3)``; with
    ``factors`` a class counts as predicted when both its texture and its shape are."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        logits = model(_to_input(torch.from_numpy(images[i : i + batch])))
        pred = _predict(logits, factors)
        correct += int((pred == torch.from_numpy(labels[i : i + batch])).sum())
    return correct / len(images)


def train_generic(recipe: GenericRecipe, data_dir: str | Path, log_every: int = 25) -> nn.Module:
    """Train a torchvision ResNet to classify the generic set; returns it (eval mode).

    Deterministic for ``recipe.seed`` (one generator for init, batches and augmentation).
    """
    if recipe.depth not in DEPTHS:
        raise ValueError(
            f"generic.depth: got {recipe.depth}, allowed: {', '.join(map(str, DEPTHS))}"
        )
    images, labels = load_split(data_dir, "train")
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    factors = class_factors(data_dir) if recipe.head == "factors" else None
    outputs = int(labels.max()) + 1 if factors is None else int(factors.max(0).sum()) + 2
    model = DEPTHS[recipe.depth](weights=None, num_classes=outputs)
    opt = _optimizer(model, recipe)
    order = torch.randperm(len(images), generator=gen)
    pos = 0
    model.train()
    for it in range(recipe.iters):
        if pos + recipe.batch_size > len(order):  # new epoch, new order
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos : pos + recipe.batch_size].numpy()
        pos += recipe.batch_size
        x = _augment(_to_input(torch.from_numpy(images[idx])), gen)
        loss = _loss(model(x), torch.from_numpy(labels[idx]), factors)
        for group in opt.param_groups:
            group["lr"] = _lr_at(it, recipe)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and (it + 1) % log_every == 0:
            log.info("generic backbone: iter %d/%d loss %.3f", it + 1, recipe.iters, loss.item())
    return model.eval()


def export_backbone(model: nn.Module, out: Path, meta: dict) -> Path:
    """Save the ResNet state dict (torchvision keys) as safetensors, and ``meta`` next to it."""
    save_state_dict(model.state_dict(), out, {"format": "pt"})
    atomic_write_json(out.with_suffix(".json"), meta, indent=1)
    return out


def make_generic_backbone(recipe: GenericRecipe, work_dir: str | Path) -> Path:
    """Generate the set (unless present), train, export ``work_dir/generic.safetensors``.

    The json next to the weights records the recipe, the held-out accuracy and the seconds;
    ``work_dir/cost.json`` the training's cost record (:mod:`drcl.engine.cost`).
    """
    work_dir = Path(work_dir)
    data_dir = work_dir / "data"
    start = time.perf_counter()
    if not (data_dir / "classes.json").is_file():
        make_generic_dataset(
            data_dir, recipe.seed, recipe.image_size, recipe.train_per_class, recipe.val_per_class
        )
    cost = CostMeter(torch.device("cpu"), 1, recipe.batch_size, {"stage": "generic"})
    cost.start(0)
    model = train_generic(recipe, data_dir)
    cost.write(work_dir, recipe.iters)  # cost.json, as every training run writes
    val_images, val_labels = load_split(data_dir, "val")
    factors = class_factors(data_dir) if recipe.head == "factors" else None
    acc = accuracy(model, val_images, val_labels, factors=factors)
    meta = {
        "recipe": {f.name: getattr(recipe, f.name) for f in fields(GenericRecipe)},
        "val_top1": round(acc, 4),
        "num_classes": int(val_labels.max()) + 1,
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = export_backbone(model, work_dir / WEIGHTS, meta)
    log.info("generic backbone: val top-1 %.1f%% in %s s -> %s", 100 * acc, meta["seconds"], out)
    return out


def run_generic(job: GenericJob) -> RunDir:
    """Make the generic backbone of ``job`` (:func:`make_generic_backbone`); its run folder
    (``job.weights``: the ResNet)."""
    make_generic_backbone(job.recipe, job.work_dir)
    return RunDir(job.work_dir)


def cached_generic_backbone(recipe: GenericRecipe, cache_root: str | Path) -> Path:
    """The generic backbone of ``recipe`` from ``cache_root/generic-<recipe.key()>/``, made once.

    The key hashes every field that determines the weights (and the generator version), so a
    later run with the same recipe reuses the file and a changed recipe makes a new one.
    """
    job = GenericJob.from_config(recipe, Path(cache_root) / f"generic-{recipe.key()}")
    if job.weights.is_file():
        log.info("generic backbone: reusing %s (recipe key %s)", job.weights, recipe.key())
        return job.weights
    run_generic(job)
    return job.weights
