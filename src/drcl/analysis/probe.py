"""``drcl analyze probe``: the crop probe of several networks side by side, as a table and JSON.

The probe itself (crops, features, classifiers, monitors) is :mod:`drcl.evaluation.probe`, one
layer below pre-training so that the ``pretrain.probe.every`` hook can use it; its public API is
re-exported here, so ``from drcl.analysis.probe import run_probe, prepare_probe_data`` works.
See ``docs/analysis.md`` for what the probe measures and which readout compares which inits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from drcl.evaluation.probe import (
    CLASSIFIERS,
    GROUPS,
    LAYERS,
    READOUTS,
    Crops,
    ProbeData,
    ProbeNet,
    backbone_features,
    check_choices,
    effective_rank,
    evaluate_features,
    extract_crops,
    group_accuracy,
    knn_predict,
    load_probe_net,
    ncm_predict,
    per_class_accuracy,
    prepare_probe_data,
    probe_features,
    probe_net,
    roi_features,
    run_probe,
    std_of_l2_normalized,
    twin_ids,
)

__all__ = [
    "CLASSIFIERS",
    "GROUPS",
    "LAYERS",
    "READOUTS",
    "Crops",
    "ProbeData",
    "ProbeNet",
    "backbone_features",
    "check_choices",
    "effective_rank",
    "evaluate_features",
    "extract_crops",
    "format_probe_table",
    "group_accuracy",
    "knn_predict",
    "load_probe_net",
    "ncm_predict",
    "per_class_accuracy",
    "prepare_probe_data",
    "probe_features",
    "probe_net",
    "roi_features",
    "run_probe",
    "run_probe_cli",
    "run_probes",
    "std_of_l2_normalized",
    "twin_ids",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- several networks


def run_probes(
    weights: Mapping[str, str | os.PathLike | nn.Module],
    data: ProbeData,
    out: str | os.PathLike | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`run_probe` for each named network on the same crops; optionally written as JSON.

    Args:
        weights: ``{name: weights}`` (``"random"``, a file or a module).
        data: from :func:`prepare_probe_data`.
        out: JSON file, written atomically (``{"inputs": ..., "runs": {name: result}}``).
        **kwargs: passed to :func:`run_probe` (readouts, classifiers, k, temperature, depth, ...).

    Returns:
        ``{name: result}``.
    """
    runs = {name: run_probe(w, data=data, **kwargs) for name, w in weights.items()}
    if out is not None:
        from drcl.utils.io import atomic_write_json

        inputs = {
            "train_ann": data.train_index.path,
            "train_images": data.train_images,
            "eval_ann": data.eval_index.path,
            "eval_images": data.eval_images,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
            "weights": {n: str(w) if not isinstance(w, nn.Module) else type(w).__name__
                        for n, w in weights.items()},
        }  # fmt: skip
        atomic_write_json(out, {"inputs": inputs, "runs": runs}, indent=1)
    return runs


def format_probe_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """One text table per readout: a row per network and classifier, a column per group
    (mean per-class accuracy, percent), then the collapse monitors."""
    lines = []
    readouts = list(dict.fromkeys(r for res in runs.values() for r in res["readouts"]))
    head = f"{'weights':<24} {'clf':<4}" + "".join(f"{g:>9}" for g in GROUPS)
    head += f"{'std':>9}{'1/sqrt d':>9}{'erank':>8}"
    for readout in readouts:
        lines += [f"readout {readout}", head]
        for name, res in runs.items():
            r = res["readouts"].get(readout)
            if r is None:
                continue
            for clf in (c for c in CLASSIFIERS if c in r):
                cells = "".join(_cell(r[clf][g]) for g in GROUPS)
                tail = f"{r['std']:>9.4f}{r['std_healthy']:>9.4f}{r['erank']:>8.1f}"
                lines.append(f"{name[:24]:<24} {clf:<4}{cells}{tail}")
        lines.append("")
    first = next(iter(runs.values()), None)
    if first is not None:
        counts = ", ".join(f"{g} {n}" for g, n in first["classes"].items())
        lines.append(f"classes per group: {counts}; crops {first['crops']}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{'-':>9}" if value is None else f"{value:>9.1f}"


# ----------------------------------------------------------------------------- command line


def _cli_paths(ns: Any) -> tuple[dict[str, str], dict[str, int]]:
    """Data paths and the random init's architecture: flags first, then ``--config``."""
    cfg = None
    if ns.config is not None:
        from drcl.config import load_config

        cfg = load_config(ns.config, ns.set)
    elif ns.set:
        raise ValueError("analyze probe: --set needs --config")
    from_cfg = {
        "train_ann": "train_ann", "train_images": "train_images",
        "eval_ann": "val_ann", "eval_images": "val_images",
    }  # fmt: skip
    paths = {}
    for key, cfg_key in from_cfg.items():
        value = getattr(ns, key) or (getattr(cfg.data, cfg_key) if cfg is not None else None)
        if value is None:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"analyze probe: {flag} is required (or --config with data.{cfg_key})")
        paths[key] = str(value)
    model = cfg.model if cfg is not None else None
    arch = {}
    for key, default in (("depth", 18), ("fpn_channels", 256), ("box_head_dim", 1024)):
        value = getattr(ns, key)
        arch[key] = int(value if value is not None else getattr(model, key, default))
    return paths, arch


def _check_out(out: Path, inputs: list[str]) -> None:
    """The results file must not replace an input (a json or a weights file)."""
    for item in inputs:
        if item != "random" and Path(item).exists() and Path(item).resolve() == out.resolve():
            raise ValueError(f"analyze probe: --out {out} would overwrite the input {item}")
    if out.is_dir():
        raise ValueError(f"analyze probe: --out {out} is a folder; give a .json file")


def run_probe_cli(ns: Any, weights: Mapping[str, str]) -> dict[str, Any]:
    """``drcl analyze probe``: probe every named network, print the tables, write ``--out``."""
    paths, arch = _cli_paths(ns)
    check_choices(_comma_list(ns.readouts), _comma_list(ns.classifiers))
    out = Path(ns.out)
    _check_out(out, [*paths.values(), *weights.values()])
    for name, w in weights.items():
        if w != "random" and not Path(w).is_file():
            raise FileNotFoundError(f"--weights {name}={w}: file not found (or 'random')")
    data = prepare_probe_data(
        paths["train_ann"], paths["train_images"], paths["eval_ann"], paths["eval_images"],
        ns.size, ns.context, ns.cache_dir, ns.max_per_class,
    )  # fmt: skip
    runs = run_probes(
        weights,
        data,
        out,
        readouts=_comma_list(ns.readouts),
        classifiers=_comma_list(ns.classifiers),
        k=ns.k,
        temperature=ns.temperature,
        seed=ns.seed,
        **arch,
    )
    print(format_probe_table(runs))
    log.info("wrote %s", out)
    return runs


def _comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]
