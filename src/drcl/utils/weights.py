"""Weights I/O: read a state dict from any file we accept, load it into a model with a report.

One place for both, so every caller (backbone init, fine-tune init, inference, analysis, export)
accepts the same files and fails with the same messages:

- :func:`read_state_dict` tries safetensors first, then ``torch.load(weights_only=True)`` (a file
  can never run code while loading), and unwraps the containers other tools write: a checkpoint
  dict with ``state_dict`` (mmdetection, Lightning), ``model`` (our trainer, detectron2) or
  ``module``, and a ``module.`` key prefix on every key (saved from a DDP wrapper).
- :func:`save_state_dict` is the one writer of a safetensors weights file (atomic: tmp + rename).
- :func:`load_into` copies the tensors whose key and shape match the model and returns a
  :class:`LoadReport` of loaded / missing / unexpected keys; a shape mismatch is always an error,
  missing or unexpected keys are one when ``strict``.

Key *layouts* (a ResNet inside a detector, detectron2's names) are the callers' business.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["CONTAINER_KEYS", "LoadReport", "load_into", "read_state_dict", "save_state_dict"]

# Checked in this order; nested containers ({"model": {"state_dict": ...}}) unwrap repeatedly.
CONTAINER_KEYS = ("state_dict", "model", "module")
_DDP_PREFIX = "module."


def read_state_dict(path: str | os.PathLike, role: str = "weights file") -> dict[str, Tensor]:
    """Read a state dict from a safetensors file or a torch file, unwrapping known containers.

    Args:
        path: ``.safetensors`` or a torch file (``.pth``/``.pt``/``.ckpt``); the suffix does not
            matter, the content decides.
        role: what the file is, named when it does not exist (e.g. ``model.weights``).

    Returns:
        ``{key: tensor}`` on the CPU, in the file's key order.

    Raises:
        FileNotFoundError: no such file (names ``role`` and the path).
        ValueError: unreadable file, a pickled object that is not plain tensors, no state dict
            inside, or a value that is not a tensor (names the file, and the key where relevant).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{role}: file not found: {path}")
    obj = _load_any(path)
    for _ in range(len(CONTAINER_KEYS)):
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    bad = next((k for k, v in obj.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise ValueError(
            f"{path}: expected a state dict of tensors, but '{bad}' is a {type(obj[bad]).__name__}"
        )
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith(_DDP_PREFIX) for k in state):
        state = {k.removeprefix(_DDP_PREFIX): v for k, v in state.items()}
    return state


def save_state_dict(
    state: Mapping[str, Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``state`` as a safetensors file, atomically (nothing half-written on failure).

    Args:
        state: ``{key: tensor}``; tensors are detached, moved to the CPU and made contiguous
            (safetensors stores plain contiguous CPU buffers).
        path: the file to write; its folder is created.
        metadata: safetensors string metadata (e.g. ``{"format": "pt"}``); None writes none.

    Returns:
        ``path``.
    """
    from safetensors.torch import save_file

    from drcl.utils.io import atomic_write

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = dict(metadata) if metadata is not None else None
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _load_any(path: Path) -> object:
    """safetensors, else ``torch.load(weights_only=True)``; one ValueError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        if path.suffix == ".safetensors":
            raise ValueError(
                f"{path}: not a readable safetensors file: {_first_line(err)}"
            ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip / weights_only refusals raise many types
        # Not torch's text: it advises weights_only=False, which would let the file run code.
        raise ValueError(
            f"{path}: not a readable safetensors or torch weights file, not a checkpoint "
            f"({type(err).__name__})"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@dataclass
class LoadReport:
    """What :func:`load_into` did: model keys loaded / left as initialised, file keys unused.

    Neither list holds ``num_batches_tracked``: a BatchNorm step counter that
    ``FrozenBatchNorm2d`` has not (and drops when loading), so a file with or without it loses
    nothing.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. class-specific layers skipped

    def table(self, max_keys: int = 20) -> str:
        """Counts per module group, then the missing and unexpected keys (up to ``max_keys``)."""
        groups = sorted({_group(k) for k in self.loaded + self.missing + self.unexpected})
        lines = [
            f"weights: {self.source}",
            f"{'module':<28} {'loaded':>7} {'random':>7} {'unexp.':>7}",
        ]
        for g in groups:
            counts = [
                sum(_group(k) == g for k in ks)
                for ks in (self.loaded, self.missing, self.unexpected)
            ]
            lines.append(f"{g:<28} {counts[0]:>7} {counts[1]:>7} {counts[2]:>7}")
        lines.append(
            f"{'total':<28} {len(self.loaded):>7} {len(self.missing):>7} {len(self.unexpected):>7}"
        )
        for title, keys in (
            ("stayed random", self.missing),
            ("unexpected (ignored)", self.unexpected),
        ):
            if keys:
                lines.append(f"{title}: {_shown(keys, max_keys)}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _group(key: str) -> str:
    # backbone.body / backbone.fpn / rpn.head / roi_heads.box_head / roi_heads.mask_head ...
    return ".".join(key.split(".")[:2])


def _shown(keys: list[str], max_keys: int) -> str:
    more = f" ... (+{len(keys) - max_keys})" if len(keys) > max_keys else ""
    return ", ".join(keys[:max_keys]) + more


def load_into(
    model: nn.Module,
    state: Mapping[str, Tensor],
    strict: bool = True,
    *,
    source: str = "<state dict>",
    hint: str = "",
) -> LoadReport:
    """Copy the tensors of ``state`` whose key and shape match ``model``; report the rest.

    Every check runs before anything is copied, so a failed load leaves ``model`` untouched.

    Args:
        model: any module; its ``state_dict()`` keys are the reference.
        state: ``{key: tensor}``, e.g. from :func:`read_state_dict`.
        strict: missing or unexpected keys are an error (a full checkpoint of this model);
            otherwise they are only reported (pre-trained parts of a bigger model).
        source: the file (or a description), named in the report and in every error.
        hint: what to check on a mismatch (e.g. ``"wrong model.depth?"``), added to errors.

    Returns:
        :class:`LoadReport`; ``loaded`` in the model's key order.

    Raises:
        ValueError: a shape differs (the first key and both shapes are named, plus how many
            more), or ``strict`` and keys are missing or unexpected (a few of each are named).
    """
    own = model.state_dict()
    loaded = [k for k in own if k in state]  # model order: weight before bias
    _check_shapes(own, state, loaded, source, hint)
    missing = [k for k in own if k not in state and not _is_counter(k)]
    unexpected = [k for k in state if k not in own and not _is_counter(k)]
    if strict and (missing or unexpected):
        raise ValueError(
            f"{source}: does not match the model{f' ({hint})' if hint else ''}: "
            f"missing {_shown(missing, 5) or 'none'}; unexpected {_shown(unexpected, 5) or 'none'}"
        )
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return LoadReport(source, loaded, missing, unexpected)


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _check_shapes(
    own: Mapping[str, Tensor], state: Mapping[str, Tensor], keys: list[str], source: str, hint: str
) -> None:
    bad = [k for k in keys if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        more = f"; {len(bad) - 1} more key(s) differ" if len(bad) > 1 else ""
        raise ValueError(
            f"{source}: key '{k}' has shape {tuple(state[k].shape)} in the file but "
            f"{tuple(own[k].shape)} in the model{f' ({hint})' if hint else ''}{more}"
        )
