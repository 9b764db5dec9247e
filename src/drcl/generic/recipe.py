"""The recipe of the generic backbone: data size and the supervised classification schedule."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenericRecipe:
    """How the generic backbone is made (defaults: 1,000 iterations, 349 s on 2 cores, 60% top-1).

    Attributes:
        weights: an existing torchvision-layout ResNet state dict; when set nothing is made.
        seed: data and training seed (the same seed gives the same weights).
        image_size: side of the square classification images, pixels.
        train_per_class: training images per class (balanced).
        val_per_class: held-out images per class, for the accuracy written next to the weights.
        depth: ResNet depth; must equal the detector's ``model.depth``.
        iters: SGD iterations (cosine schedule, 5% linear warm-up).
        batch_size: images per iteration.
        lr: peak learning rate.
        weight_decay: SGD weight decay.
    """

    weights: str | None = None
    seed: int = 0
    image_size: int = 48
    train_per_class: int = 150
    val_per_class: int = 25
    depth: int = 18
    iters: int = 1000  # the loss leaves chance (ln 20) only after ~500 iterations
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 5e-4
