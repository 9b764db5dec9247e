"""Crop probe: representation quality of a backbone on the detection classes, without fine-tuning.

The core, used by the pre-training hook (:mod:`drcl.pretrain.probe_hook`) and by
``drcl analyze probe`` (:mod:`drcl.analysis.probe`, which re-exports this API).

Every ground-truth box of a train and an eval json is cropped from its image with some context
and resized to a small square (:func:`extract_crops`); the crops go through the ResNet body in
eval mode and each stage's output is global-average-pooled (:func:`backbone_features`). A second
readout sends the *full* images through the FPN and the box head (``MultiScaleRoIAlign`` 7x7 on
P2-P5 with the ground-truth boxes, then ``TwoMLPHead``; :func:`roi_features`), as a detector sees
its boxes. Two parameter-free classifiers are fitted on the train features and read out on the
eval features:

- cosine nearest class mean (NCM): class mean of the L2-normalised train features;
- weighted kNN (DINO, solo-learn): the ``k = 20`` nearest train features by cosine similarity
  ``s`` vote for their class with weight ``exp(s / T)``, ``T = 0.07``.

Accuracy is computed per class and averaged over the classes of each frequency group (r/c/f:
the train json's ``frequency`` field, else the LVIS rule on its image counts), over all classes,
and over the twin classes (categories with a ``twin`` field, or a top-level ``confusable_pairs``
list). Eval classes with no train crop cannot be predicted by any backbone; they are left out of
every average and listed. Collapse monitors on the eval features:
``std`` (lightly's ``std_of_l2_normalized``: 0 when collapsed, about ``1/sqrt(d)`` when healthy)
and ``erank`` (Roy & Vetterli 2007: ``exp`` of the entropy of the normalised singular values;
1 when collapsed to a point, up to ``d``).

Which inits each readout compares: C4/C5 compare every init (random, generic, 2DRCL, fine-tuned).
The RoI readout uses the FPN and box head, which the generic backbone (a classifier) does not
have: for it and for random init they are random, so ``roi`` compares only 2DRCL exports and
fine-tuned detectors (the result's ``trained`` field says which parts were loaded).

Weights accepted by :func:`load_probe_net`: ``"random"``; a torchvision ResNet state dict (the
generic backbone, ``drcl pretrain-generic``); a file in the detector layout (``backbone.body.*``,
``backbone.fpn.*``, ``roi_heads.box_head.*``: ``pretrained.safetensors`` of ``drcl pretrain``, a
fine-tuned ``model_final.safetensors`` or a trainer checkpoint); or a module (a 2DRCL model's
online encoder, a torchvision detector, a ``BackboneWithFPN``, a ResNet).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign, box_convert, roi_align

from drcl.data.coco import CocoIndex
from drcl.data.groups import GROUP_NAMES
from drcl.data.paths import image_path

log = logging.getLogger(__name__)

__all__ = [
    "Crops",
    "ProbeData",
    "ProbeNet",
    "backbone_features",
    "effective_rank",
    "extract_crops",
    "group_accuracy",
    "knn_predict",
    "load_probe_net",
    "ncm_predict",
    "prepare_probe_data",
    "probe_features",
    "probe_net",
    "roi_features",
    "run_probe",
    "std_of_l2_normalized",
]

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet, as every stage uses
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
LAYERS = ("C2", "C3", "C4", "C5")  # layer1..layer4 of the ResNet
READOUTS = (*LAYERS, "roi")
CLASSIFIERS = ("ncm", "knn")
GROUPS = ("all", "rare", "common", "frequent", "twins")
_CACHE_VERSION = 1


# ----------------------------------------------------------------------------- crops


@dataclass
class Crops:
    """Ground-truth box crops of one json, in image order then json order inside an image.

    Attributes:
        images: (N, 3, S, S) uint8 crops.
        labels: (N,) int64 category ids.
        image_ids: (N,) int64 image id of each crop.
        boxes: (N, 4) float32 xyxy ground-truth boxes in image pixels (without context).
    """

    images: Tensor
    labels: Tensor
    image_ids: Tensor
    boxes: Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _boxes_by_image(index: CocoIndex, max_per_class: int = 0) -> Iterator[tuple[dict, list[dict]]]:
    """(image record, its usable annotations): not crowd, width and height > 0; at most
    ``max_per_class`` of a class (0 = all), a fixed random choice (seed 0), so that the crops and
    the RoI readout of one json pick the same boxes."""
    usable = {
        iid: [
            a
            for a in index.anns_by_image[iid]
            if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0
        ]
        for iid in index.image_ids
    }
    if max_per_class > 0:
        keep = _capped(usable, max_per_class)
        usable = {
            i: [a for k, a in enumerate(anns) if (i, k) in keep] for i, anns in usable.items()
        }
    for iid in index.image_ids:
        if usable[iid]:
            yield index.images[iid], usable[iid]


def _capped(usable: Mapping[int, list[dict]], cap: int) -> set[tuple[int, int]]:
    """(image id, position) of at most ``cap`` annotations per class, drawn without replacement."""
    by_class: dict[int, list[tuple[int, int]]] = {}
    for iid, anns in usable.items():
        for k, a in enumerate(anns):
            by_class.setdefault(int(a["category_id"]), []).append((iid, k))
    rng = np.random.default_rng(0)
    keep: set[tuple[int, int]] = set()
    for cid in sorted(by_class):
        items = by_class[cid]
        chosen = (
            rng.choice(len(items), cap, replace=False) if len(items) > cap else range(len(items))
        )
        keep.update(items[i] for i in chosen)
    return keep


def _read_rgb(root: str | os.PathLike, image: dict, source: str) -> Tensor:
    """(3, H, W) uint8 tensor of an image record; errors name the json and the image."""
    path = image_path(root, image, f"{source}: image {image['id']}")
    if not path.is_file():
        raise FileNotFoundError(f"{source}: image {image['id']}: file not found: {path}")
    with Image.open(path) as pil:
        arr = np.asarray(pil.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _context_boxes(xywh: Tensor, context: float, height: int, width: int) -> Tensor:
    """(K, 4) COCO xywh -> xyxy widened by ``context`` x side on every side, clipped."""
    dx, dy = context * xywh[:, 2], context * xywh[:, 3]
    out = box_convert(xywh, "xywh", "xyxy") + torch.stack([-dx, -dy, dx, dy], 1)
    lim = torch.tensor([width, height, width, height], dtype=out.dtype)
    return torch.minimum(out.clamp(min=0), lim)


def _load_index(ann: str | os.PathLike | CocoIndex, role: str) -> CocoIndex:
    if isinstance(ann, CocoIndex):
        return ann
    if not Path(ann).is_file():
        raise FileNotFoundError(f"{role}: annotation file not found: {ann}")
    return CocoIndex.from_file(ann)


def extract_crops(
    ann: str | os.PathLike | CocoIndex,
    images_root: str | os.PathLike,
    size: int = 64,
    context: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    max_per_class: int = 0,
) -> Crops:
    """Crop every usable ground-truth box (not crowd, positive size) of ``ann`` from its image.

    The box is widened by ``context`` times its width (height) on the left and right (top and
    bottom), clipped to the image and resized to ``size x size`` (bilinear ``roi_align``, aspect
    not kept).

    Args:
        ann: COCO/LVIS json path, or an index of one.
        images_root: folder that ``images[].file_name`` is relative to.
        size: side of the square crops, pixels.
        context: extra margin per side as a fraction of the box side (0.1 = 10%).
        cache_dir: if set, the crops are stored there as safetensors, keyed by the json's path,
            size and modification time, the image folder, ``size``, ``context`` and
            ``max_per_class``, and read back on the next call.
        max_per_class: keep at most this many boxes of a class (a fixed random choice), to
            bound time and memory on large sets (LVIS train has 1.27M boxes); 0 = all.

    Raises:
        FileNotFoundError: the json or an image is missing (names it).
        ValueError: the json has no usable box, or ``size``/``context`` out of range.
    """
    if size < 8 or not 0 <= context <= 1 or max_per_class < 0:
        raise ValueError(
            "probe crops: size >= 8, 0 <= context <= 1 and max_per_class >= 0 needed, got "
            f"{size}, {context}, {max_per_class}"
        )
    index = _load_index(ann, "probe")
    cache = _cache_file(index, images_root, f"{size}|{context}|{max_per_class}", cache_dir)
    if cache is not None and cache.is_file():
        return _read_cache(cache)
    crops = _crop_all(index, images_root, size, context, max_per_class)
    if cache is not None:
        _write_cache(cache, crops)
    return crops


def _crop_all(
    index: CocoIndex, root: str | os.PathLike, size: int, context: float, max_per_class: int
) -> Crops:
    images, labels, image_ids, boxes = [], [], [], []
    for image, anns in _boxes_by_image(index, max_per_class):
        pixels = _read_rgb(root, image, index.path)
        _, h, w = pixels.shape
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
        rois = _context_boxes(xywh, context, h, w)
        crop = roi_align(pixels[None].float(), [rois], (size, size), 1.0, 2, aligned=True)
        images.append(crop.round().clamp(0, 255).to(torch.uint8))
        labels += [int(a["category_id"]) for a in anns]
        image_ids += [int(image["id"])] * len(anns)
        boxes.append(box_convert(xywh, "xywh", "xyxy"))
    if not labels:
        raise ValueError(f"{index.path}: no usable box (non-crowd, width and height > 0) to probe")
    return Crops(
        torch.cat(images),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(image_ids, dtype=torch.int64),
        torch.cat(boxes),
    )


def _cache_file(
    index: CocoIndex, root: str | os.PathLike, options: str, cache_dir: Any
) -> Path | None:
    if cache_dir is None or not Path(index.path).is_file():
        return None
    ann = Path(index.path).resolve()
    st = ann.stat()
    key = f"{_CACHE_VERSION}|{ann}|{st.st_size}|{st.st_mtime_ns}|{Path(root).resolve()}|"
    key += options
    return Path(cache_dir) / f"crops_{hashlib.sha1(key.encode()).hexdigest()[:16]}.safetensors"


def _write_cache(path: Path, crops: Crops) -> None:
    from drcl.utils.weights import save_state_dict

    save_state_dict(
        {k: getattr(crops, k) for k in ("images", "labels", "image_ids", "boxes")}, path
    )


def _read_cache(path: Path) -> Crops:
    from safetensors.torch import load_file

    t = load_file(str(path))
    return Crops(t["images"], t["labels"], t["image_ids"], t["boxes"])


# ----------------------------------------------------------------------------- the network


@dataclass(eq=False)
class ProbeNet:
    """The parts a probe reads: ResNet body, and (for the RoI readout) FPN and box head.

    Attributes:
        body: a torchvision ResNet or the ``IntermediateLayerGetter`` of a ``BackboneWithFPN``.
        fpn: torchvision ``FeaturePyramidNetwork`` over C2-C5, or None.
        box_head: ``TwoMLPHead`` (``fc6``/``fc7``), or None.
        trained: which of ``body``/``fpn``/``box_head`` hold loaded (not random) weights.
        source: where the weights came from (a path, ``"random"`` or a module's class name).
    """

    body: nn.Module
    fpn: nn.Module | None = None
    box_head: nn.Module | None = None
    trained: dict[str, bool] = field(default_factory=dict)
    source: str = "module"

    def parts(self) -> list[nn.Module]:
        return [m for m in (self.body, self.fpn, self.box_head) if m is not None]


def probe_net(module: nn.Module) -> ProbeNet:
    """Wrap a module's parts (shared, not copied) for the probe.

    Accepts a 2DRCL model (its online encoder), an encoder or a detector with ``backbone`` and
    ``box_head`` / ``roi_heads.box_head``, a ``BackboneWithFPN``, or a bare ResNet.
    """
    m = getattr(module, "module", module)  # DDP
    m = getattr(m, "online", m)  # DRCLModel -> Encoder
    backbone = getattr(m, "backbone", m)
    body = getattr(backbone, "body", backbone)
    if not hasattr(body, "layer4"):
        raise ValueError(f"probe: {type(module).__name__} holds no ResNet body (no layer4)")
    box_head = getattr(m, "box_head", None)
    if box_head is None:
        box_head = getattr(getattr(m, "roi_heads", None), "box_head", None)
    fpn = getattr(backbone, "fpn", None)
    trained = {"body": True, "fpn": fpn is not None, "box_head": box_head is not None}
    return ProbeNet(body, fpn, box_head, trained, type(module).__name__)


def _depth_of(body_state: Mapping[str, Tensor], source: str) -> int:
    """ResNet depth from the number of blocks in layer3 and the block type."""
    blocks = {int(k.split(".")[1]) for k in body_state if k.startswith("layer3.")}
    if not blocks:
        raise ValueError(f"{source}: no ResNet 'layer3.*' key; not a ResNet or detector file")
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in body_state)
    depths = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101}
    depth = depths.get((bottleneck, max(blocks) + 1))
    if depth is None:
        raise ValueError(
            f"{source}: a ResNet with {max(blocks) + 1} layer3 blocks is not supported"
        )
    return depth


def _split_state(state: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """body / fpn / box_head parts of a detector-, trainer- or ResNet-layout state dict."""
    prefixes = {
        "body": ("backbone.body.", "online.backbone.body.", "body."),
        "fpn": ("backbone.fpn.", "online.backbone.fpn."),
        "box_head": ("roi_heads.box_head.", "online.box_head."),
    }
    parts: dict[str, dict[str, Tensor]] = {}
    for part, options in prefixes.items():
        for prefix in options:
            found = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            if found:
                parts[part] = found
                break
    if "body" not in parts:  # a bare torchvision ResNet (generic backbone, ImageNet file)
        parts["body"] = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return parts


def load_probe_net(
    weights: str | os.PathLike | nn.Module,
    depth: int = 18,
    fpn_channels: int = 256,
    box_head_dim: int = 1024,
    seed: int = 0,
) -> ProbeNet:
    """Build the probe's network and load ``weights`` into it.

    Args:
        weights: ``"random"``, a weights file (see the module docstring) or a module
            (wrapped by :func:`probe_net`, not copied).
        depth, fpn_channels, box_head_dim: the architecture for ``"random"`` and for the parts a
            file lacks; a file's own shapes win (its depth, FPN width and box head width are read
            from it).
        seed: seed of the random init (the global RNG is left as it was).

    Raises:
        FileNotFoundError: no such file. ValueError: not a ResNet / detector state dict.
    """
    if isinstance(weights, nn.Module):
        return probe_net(weights)
    from drcl.utils.weights import load_into, read_state_dict

    source = str(weights)
    parts: dict[str, dict[str, Tensor]] = {}
    if source != "random":
        parts = _split_state(read_state_dict(weights, role="probe weights"))
        depth = _depth_of(parts["body"], source)
        if "fpn" in parts:
            fpn_channels = int(parts["fpn"]["inner_blocks.0.0.weight"].shape[0])
        if "box_head" in parts:
            box_head_dim = int(parts["box_head"]["fc6.weight"].shape[0])
    net = _build_net(depth, fpn_channels, box_head_dim, seed, source)
    for part, state in parts.items():
        module = getattr(net, part)
        try:
            load_into(module, state, strict=True, source=f"{source} ({part})")
        except ValueError:
            if part == "body":
                raise
            log.warning("%s: %s does not match a C2-C5 FPN / TwoMLPHead; left random", source, part)
            continue
        net.trained[part] = True
    return net


def _build_net(
    depth: int, fpn_channels: int, box_head_dim: int, seed: int, source: str
) -> ProbeNet:
    from drcl.models.backbone import build_resnet_fpn
    from drcl.models.heads import TwoMLPHead

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_resnet_fpn(depth, fpn_channels, "bn", 5, None)
        box_head = TwoMLPHead(fpn_channels * 7 * 7, box_head_dim)
    trained = {"body": False, "fpn": False, "box_head": False}
    return ProbeNet(backbone.body, backbone.fpn, box_head, trained, source)


# ----------------------------------------------------------------------------- features


@contextlib.contextmanager
def eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Every module in eval mode inside the block; each one's own mode (per submodule) after."""
    saved = [(m, m.training) for top in modules for m in top.modules()]
    try:
        for top in modules:
            top.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


def _normalise(images: Tensor, device: torch.device) -> Tensor:
    x = images.to(device, non_blocking=True).float().div_(255)
    return (x - MEAN.to(device)) / STD.to(device)


def _stages(body: nn.Module, x: Tensor, last: int) -> dict[str, Tensor]:
    """C2..C_last of a torchvision ResNet (or its IntermediateLayerGetter); stops after ``last``."""
    x = body.maxpool(body.relu(body.bn1(body.conv1(x))))
    out = {}
    for i in range(1, last):  # C2 = layer1 ... C5 = layer4
        x = getattr(body, f"layer{i}")(x)
        out[f"C{i + 1}"] = x
    return out


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def backbone_features(
    net: ProbeNet | nn.Module,
    crops: Tensor,
    layers: Sequence[str] = ("C4", "C5"),
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """Global-average-pooled ResNet stage outputs of uint8 crops, in eval mode, without gradient.

    Args:
        net: a :class:`ProbeNet` or a module :func:`probe_net` accepts.
        crops: (N, 3, S, S) uint8 (ImageNet-normalised here).
        layers: names among ``C2``..``C5``.
        batch_size: crops per forward pass.

    Returns:
        ``{layer: (N, C_layer) float32 on the CPU}``.
    """
    net = net if isinstance(net, ProbeNet) else probe_net(net)
    bad = [layer for layer in layers if layer not in LAYERS]
    if bad or not layers:
        raise ValueError(f"probe layers: got {list(layers)}, allowed: {', '.join(LAYERS)}")
    last = max(int(layer[1]) for layer in layers)
    device = _device_of(net.body)
    out: dict[str, list[Tensor]] = {layer: [] for layer in layers}
    with eval_mode([net.body]):
        for i in range(0, len(crops), batch_size):
            feats = _stages(net.body, _normalise(crops[i : i + batch_size], device), last)
            for layer in layers:
                out[layer].append(feats[layer].mean((2, 3)).float().cpu())
    width = {layer: _stage_width(net.body, layer) for layer in layers}
    return {k: torch.cat(v) if v else torch.zeros(0, width[k]) for k, v in out.items()}


def _stage_width(body: nn.Module, layer: str) -> int:
    block = getattr(body, f"layer{int(layer[1]) - 1}")[-1]
    last_bn = getattr(block, "bn3", None) or block.bn2
    return int(last_bn.num_features)


@torch.no_grad()
def roi_features(
    net: ProbeNet,
    ann: str | os.PathLike | CocoIndex,
    images_root: str | os.PathLike,
    batch_size: int = 8,
    max_per_class: int = 0,
) -> Tensor:
    """Box-head features of every usable ground-truth box, from the full images.

    The images (ImageNet-normalised, native size) go through body + FPN; ``MultiScaleRoIAlign``
    7x7 (sampling ratio 2, P2-P5, torchvision's level mapping) pools each ground-truth box, and
    the ``TwoMLPHead`` gives its feature. Same boxes and order as :func:`extract_crops` with the
    same ``max_per_class``.

    Returns:
        (N, box_head_dim) float32 on the CPU.

    Raises:
        ValueError: ``net`` has no FPN or box head.
    """
    if net.fpn is None or net.box_head is None:
        raise ValueError(f"probe readout 'roi': {net.source} has no FPN and box head")
    index = _load_index(ann, "probe")
    pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=2)
    device = _device_of(net.body)
    feats: list[Tensor] = []
    pending: list[tuple[Tensor, Tensor]] = []
    with eval_mode(net.parts()):
        for image, anns in _boxes_by_image(index, max_per_class):
            pixels = _read_rgb(images_root, image, index.path)
            xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
            pending.append((pixels, box_convert(xywh, "xywh", "xyxy")))
            if len(pending) == batch_size:
                feats.append(_roi_batch(net, pool, pending, device))
                pending = []
        if pending:
            feats.append(_roi_batch(net, pool, pending, device))
    if not feats:
        raise ValueError(f"{index.path}: no usable box (non-crowd, width and height > 0) to probe")
    return torch.cat(feats)


def _roi_batch(
    net: ProbeNet,
    pool: MultiScaleRoIAlign,
    items: list[tuple[Tensor, Tensor]],
    device: torch.device,
) -> Tensor:
    """Images of different sizes are zero-padded to a common (multiple of 32) size, as
    torchvision's ``GeneralizedRCNNTransform`` batches them."""
    h = max(p.shape[1] for p, _ in items)
    w = max(p.shape[2] for p, _ in items)
    h, w = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
    x = torch.zeros(len(items), 3, h, w, device=device)
    for i, (p, _) in enumerate(items):
        x[i, :, : p.shape[1], : p.shape[2]] = _normalise(p[None], device)[0]
    levels = net.fpn(net.body(x) if hasattr(net.body, "return_layers") else _c_levels(net.body, x))
    sizes = [(p.shape[1], p.shape[2]) for p, _ in items]
    rois = pool(levels, [b.to(device) for _, b in items], sizes)
    return net.box_head(rois).float().cpu()


def _c_levels(body: nn.Module, x: Tensor) -> dict[str, Tensor]:
    feats = _stages(body, x, 5)
    return {str(i): feats[f"C{i + 2}"] for i in range(4)}


# ----------------------------------------------------------------------------- classifiers


def ncm_predict(train: Tensor, train_labels: Tensor, test: Tensor) -> Tensor:
    """Cosine nearest class mean.

    Class mean ``m_c`` = mean of the L2-normalised train features of class ``c``; a test feature
    ``x`` gets ``argmax_c cos(x, m_c)`` (ties: the smallest label).

    Args:
        train: (N, D). train_labels: (N,) int64 labels (any integers). test: (M, D).

    Returns:
        (M,) int64 predicted labels.
    """
    classes, inverse = torch.unique(train_labels, return_inverse=True)
    z = F.normalize(train.float(), dim=1)
    means = torch.zeros(len(classes), z.shape[1]).index_add_(0, inverse, z)
    means = F.normalize(means, dim=1)
    if len(test) == 0:
        return torch.zeros(0, dtype=torch.int64)
    sims = F.normalize(test.float(), dim=1) @ means.T
    return classes[sims.argmax(1)]


def knn_predict(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> Tensor:
    """Weighted kNN on cosine similarity (DINO's ``knn_classifier``, solo-learn's ``WeightedKNN``).

    The ``k`` most similar train features (``min(k, N)``) vote for their class with weight
    ``exp(s / T)``; the class with the largest summed vote wins (ties: the smallest label).

    Args:
        train: (N, D). train_labels: (N,) int64. test: (M, D).
        k: neighbours. temperature: ``T``. chunk: test rows per similarity matrix.

    Returns:
        (M,) int64 predicted labels.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"probe kNN: k >= 1 and temperature > 0 needed, got {k}, {temperature}")
    classes, inverse = torch.unique(train_labels, return_inverse=True)
    z = F.normalize(train.float(), dim=1)
    k = min(k, len(z))
    preds = []
    for i in range(0, len(test), chunk):
        sims = F.normalize(test[i : i + chunk].float(), dim=1) @ z.T
        top, idx = sims.topk(k, dim=1)
        votes = torch.zeros(len(sims), len(classes))
        votes.scatter_add_(1, inverse[idx], (top / temperature).exp())
        preds.append(classes[votes.argmax(1)])
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)


# ----------------------------------------------------------------------------- metrics


def std_of_l2_normalized(z: Tensor) -> float:
    """Mean over dimensions of the std over samples of the L2-normalised rows (lightly's
    ``std_of_l2_normalized``): 0 for a collapsed encoder, about ``1 / sqrt(D)`` for a healthy
    one. (N, D) -> float; NaN for fewer than 2 rows."""
    if len(z) < 2:
        return float("nan")
    return float(F.normalize(z.float(), dim=1).std(0).mean())


def effective_rank(z: Tensor, eps: float = 1e-12) -> float:
    """Effective rank (Roy & Vetterli, 2007) of the L2-normalised rows of ``z``: with singular
    values ``s`` and ``p = s / sum(s)``, ``exp(-sum p log p)``; 1 for a collapsed encoder (all
    rows equal), ``D`` at most. Not centred (as RankMe), so a constant output gives exactly 1.
    (N, D) -> float; NaN for no rows."""
    if len(z) == 0:
        return float("nan")
    s = torch.linalg.svdvals(F.normalize(z.double(), dim=1))
    p = s / s.sum().clamp(min=eps)
    p = p[p > eps]
    return float(torch.exp(-(p * p.log()).sum()))


def per_class_accuracy(pred: Tensor, true: Tensor) -> dict[int, float]:
    """``{label: share of its samples predicted right}`` over the labels present in ``true``."""
    out = {}
    for c in torch.unique(true).tolist():
        hit = pred[true == c] == c
        out[int(c)] = float(hit.float().mean())
    return out


def group_accuracy(
    per_class: Mapping[int, float], groups: Mapping[int, str], twins: set[int] | None = None
) -> dict[str, float | None]:
    """Per-class accuracy (in percent) averaged within ``all``, ``rare``, ``common``,
    ``frequent`` and ``twins``; a group with no class gives None.

    Args:
        per_class: ``{category_id: accuracy in [0, 1]}``.
        groups: ``{category_id: 'r' | 'c' | 'f'}``; classes missing here count only in ``all``.
        twins: category ids of the twin classes.
    """
    members = {"all": list(per_class)}
    for g, name in GROUP_NAMES.items():
        members[name] = [c for c in per_class if groups.get(c) == g]
    members["twins"] = [c for c in per_class if c in (twins or set())]
    return {
        name: (100.0 * sum(per_class[c] for c in cs) / len(cs) if cs else None)
        for name, cs in members.items()
    }


# ----------------------------------------------------------------------------- data + run


@dataclass
class ProbeData:
    """What a probe reads, prepared once and reused for every network (and every hook call).

    Attributes:
        train, eval: crops of the train and eval jsons.
        groups: ``{category_id: 'r'|'c'|'f'}`` from the train json.
        twins: category ids that belong to a twin pair (empty when the json names none).
        excluded: eval category ids with no train crop (left out of every average).
        train_index, eval_index: the indexes, and the image folders (for the RoI readout).
    """

    train: Crops
    eval: Crops
    groups: dict[int, str]
    twins: set[int]
    excluded: list[int]
    train_index: CocoIndex
    eval_index: CocoIndex
    train_images: str
    eval_images: str
    params: dict[str, Any] = field(default_factory=dict)


def twin_ids(
    categories: Sequence[Mapping[str, Any]], data: Mapping[str, Any] | None = None
) -> set[int]:
    """Category ids in a twin pair: a category's ``twin`` field (the other class's name or id),
    or a top-level ``confusable_pairs`` list of ``[id, id]``; empty when there is neither."""
    by_name = {str(c.get("name")): int(c["id"]) for c in categories}
    ids = {int(c["id"]) for c in categories}
    out: set[int] = set()
    for c in categories:
        other = c.get("twin")
        other_id = by_name.get(other) if isinstance(other, str) else other
        if other is not None and other_id in ids:
            out |= {int(c["id"]), int(other_id)}
    for pair in (data or {}).get("confusable_pairs", []) or []:
        out |= {int(i) for i in pair if int(i) in ids}
    return out


def prepare_probe_data(
    train_ann: str | os.PathLike,
    train_images: str | os.PathLike,
    eval_ann: str | os.PathLike,
    eval_images: str | os.PathLike,
    size: int = 64,
    context: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    max_per_class: int = 0,
) -> ProbeData:
    """Crops of both jsons, frequency groups and twins; see :func:`extract_crops`."""
    train_index = _load_index(train_ann, "probe train_ann")
    eval_index = _load_index(eval_ann, "probe eval_ann")
    train = extract_crops(train_index, train_images, size, context, cache_dir, max_per_class)
    evaluation = extract_crops(eval_index, eval_images, size, context, cache_dir, max_per_class)
    groups = train_index.frequency_groups()
    seen = set(train.labels.tolist())
    excluded = sorted(set(evaluation.labels.tolist()) - seen)
    if excluded:
        log.warning(
            "probe: %d eval classes have no train box, left out: %s", len(excluded), excluded
        )
    return ProbeData(
        train, evaluation, groups, twin_ids(train_index.categories, train_index.data), excluded,
        train_index, eval_index, str(train_images), str(eval_images),
        {"size": size, "context": context, "max_per_class": max_per_class},
    )  # fmt: skip


def probe_features(
    net: ProbeNet,
    data: ProbeData,
    readouts: Sequence[str],
    batch_size: int = 256,
) -> dict[str, tuple[Tensor, Tensor]]:
    """``{readout: (train features, eval features)}``; the ResNet stages in one pass."""
    layers = [r for r in readouts if r in LAYERS]
    out = {}
    if layers:
        train = backbone_features(net, data.train.images, layers, batch_size)
        evaluation = backbone_features(net, data.eval.images, layers, batch_size)
        out = {layer: (train[layer], evaluation[layer]) for layer in layers}
    if "roi" in readouts:
        cap = data.params.get("max_per_class", 0)
        out["roi"] = (
            roi_features(net, data.train_index, data.train_images, max_per_class=cap),
            roi_features(net, data.eval_index, data.eval_images, max_per_class=cap),
        )
    return {r: out[r] for r in readouts}


def evaluate_features(
    train: Tensor,
    eval_feats: Tensor,
    data: ProbeData,
    classifiers: Sequence[str] = CLASSIFIERS,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, Any]:
    """Accuracy per group for each classifier, and the collapse monitors on ``eval_feats``."""
    keep = ~torch.isin(data.eval.labels, torch.tensor(data.excluded, dtype=torch.int64))
    test, truth = eval_feats[keep], data.eval.labels[keep]
    out: dict[str, Any] = {}
    for name in classifiers:
        if name == "ncm":
            pred = ncm_predict(train, data.train.labels, test)
        elif name == "knn":
            pred = knn_predict(train, data.train.labels, test, k, temperature)
        else:
            raise ValueError(f"probe classifier: got {name!r}, allowed: {', '.join(CLASSIFIERS)}")
        out[name] = group_accuracy(per_class_accuracy(pred, truth), data.groups, data.twins)
    out["std"] = std_of_l2_normalized(eval_feats)
    out["std_healthy"] = 1.0 / math.sqrt(eval_feats.shape[1])
    out["erank"] = effective_rank(eval_feats)
    out["dim"] = int(eval_feats.shape[1])
    return out


def run_probe(
    weights: str | os.PathLike | nn.Module | ProbeNet,
    train_ann: str | os.PathLike | None = None,
    train_images: str | os.PathLike | None = None,
    eval_ann: str | os.PathLike | None = None,
    eval_images: str | os.PathLike | None = None,
    readouts: Sequence[str] = ("C4", "C5"),
    classifiers: Sequence[str] = CLASSIFIERS,
    *,
    data: ProbeData | None = None,
    size: int = 64,
    context: float = 0.1,
    k: int = 20,
    temperature: float = 0.07,
    cache_dir: str | os.PathLike | None = None,
    max_per_class: int = 0,
    depth: int = 18,
    fpn_channels: int = 256,
    box_head_dim: int = 1024,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Probe one network; the result is JSON-ready.

    Args:
        weights: ``"random"``, a weights file, a module or a :class:`ProbeNet`
            (:func:`load_probe_net`).
        train_ann, train_images, eval_ann, eval_images: the jsons and image folders; not needed
            when ``data`` (from :func:`prepare_probe_data`) is given, which saves re-cropping.
        readouts: among ``C2``..``C5`` and ``roi``.
        classifiers: among ``ncm`` and ``knn``.
        size, context, cache_dir, max_per_class: crops (:func:`extract_crops`).
        k, temperature: the kNN.
        depth, fpn_channels, box_head_dim, seed: random init (:func:`load_probe_net`).
        batch_size: crops per forward pass.

    Returns:
        ``{"weights", "trained", "readouts": {readout: {"ncm": {"all", "rare", "common",
        "frequent", "twins"}, "knn": {...}, "std", "std_healthy", "erank", "dim"}},
        "classes", "crops", "excluded_classes", "seconds"}``; accuracies in percent, None for a
        group without classes.
    """
    start = time.perf_counter()
    check_choices(readouts, classifiers)
    if data is None:
        if None in (train_ann, train_images, eval_ann, eval_images):
            raise ValueError(
                "run_probe: give train_ann, train_images, eval_ann and eval_images, or data"
            )
        data = prepare_probe_data(
            train_ann, train_images, eval_ann, eval_images, size, context, cache_dir, max_per_class
        )
    net = weights if isinstance(weights, ProbeNet) else load_probe_net(
        weights, depth, fpn_channels, box_head_dim, seed
    )  # fmt: skip
    results = {
        readout: evaluate_features(train, evaluation, data, classifiers, k, temperature)
        for readout, (train, evaluation) in probe_features(net, data, readouts, batch_size).items()
    }
    return {
        "weights": net.source,
        "trained": dict(net.trained),
        "readouts": results,
        "classes": _class_counts(data),
        "crops": {"train": len(data.train), "eval": len(data.eval), **data.params},
        "excluded_classes": data.excluded,
        "seconds": round(time.perf_counter() - start, 2),
    }


def check_choices(readouts: Sequence[str], classifiers: Sequence[str]) -> None:
    """ValueError naming what is allowed, for an unknown or empty readout or classifier list."""
    if not readouts or any(r not in READOUTS for r in readouts):
        raise ValueError(f"probe readouts: got {list(readouts)}, allowed: {', '.join(READOUTS)}")
    if not classifiers or any(c not in CLASSIFIERS for c in classifiers):
        raise ValueError(
            f"probe classifiers: got {list(classifiers)}, allowed: {', '.join(CLASSIFIERS)}"
        )


def _class_counts(data: ProbeData) -> dict[str, int]:
    present = set(data.eval.labels.tolist()) - set(data.excluded)
    out = {"all": len(present)}
    for g, name in GROUP_NAMES.items():
        out[name] = sum(data.groups.get(c) == g for c in present)
    out["twins"] = len(present & data.twins)
    return out
