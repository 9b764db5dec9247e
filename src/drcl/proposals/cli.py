"""``drcl proposals CONFIG --out P.json``: boxes to pre-train on (gt, file or detector)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from drcl.config import load_config
from drcl.data.coco import CocoIndex
from drcl.proposals.core import gt_proposals, load_proposals, write_proposals
from drcl.utils.io import read_json


def cli_proposals(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out)
    index = CocoIndex.from_file(cfg.data.train_ann)
    source = cfg.pretrain.proposals.source
    if source == "gt":
        records = gt_proposals(index.data)
    elif source == "file":
        if not cfg.pretrain.proposals.file:
            raise ValueError("pretrain.proposals.source=file needs pretrain.proposals.file")
        load_proposals(cfg.pretrain.proposals.file, index.data, index.cat_id_to_label)  # validate
        records = read_json(cfg.pretrain.proposals.file)
    else:
        from drcl.proposals.detector import run_detector_proposals

        records = run_detector_proposals(cfg, out)
    write_proposals(out, records)
    per_image = Counter(r["image_id"] for r in records)
    labelled = sum(r.get("category_id") is not None for r in records)
    empty = len(index.image_ids) - len(per_image)
    print(
        f"{len(records)} proposals from '{source}' on {len(per_image)} images "
        f"({empty} images with none; {labelled} with a class) -> {out}"
    )
    return 0
