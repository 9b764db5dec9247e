"""``drcl predict`` and ``drcl test``: a fine-tuned checkpoint on any images or annotation file.

The model is rebuilt from the run's ``config.yaml`` exactly as fine-tuning built it
(:func:`drcl.finetune.runner.detector_for`), its weights load strictly
(:func:`drcl.detection.inference.load_detector_weights`), and it runs through fine-tuning's own
inference loop and record writer (:func:`~drcl.detection.inference.predict_batches`,
:func:`~drcl.detection.inference.detections_to_records`), so ``drcl test`` on the validation
split reproduces the metrics that training wrote into ``eval/``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from drcl.config import Config, load_config
from drcl.config.schema import DataConfig
from drcl.data.categories import CategoryMatch, CategoryTable, match_categories
from drcl.detection.inference import (
    detections_to_records,
    load_detector_weights,
    predict_batches,
)
from drcl.engine.distributed import resolve_device
from drcl.engine.runtime import resolve_num_workers
from drcl.predict.draw import draw_detections, drawing_names, save_png
from drcl.predict.images import (
    Failure,
    ImageItem,
    ImageListDataset,
    collate_readable,
)
from drcl.utils.io import (
    atomic_write_json,
    check_output_dir,
    check_output_file,
    refuse_overwriting_inputs,
)
from drcl.utils.run_dir import CONFIG, EVAL, MODEL_FINAL, metrics_name

log = logging.getLogger(__name__)

CONFIG_NAME = CONFIG
WEIGHTS_NAME = MODEL_FINAL
EVAL_DIR = EVAL  # the run's own evaluation: `drcl test` never writes there
DEFAULT_DRAW_THR = 0.3  # drawings only; the results json keeps the LVIS threshold


@dataclass(frozen=True)
class Checkpoint:
    """A fine-tuned detector: its weights, the config that built it, and its run folder."""

    weights: Path
    config: Path
    run_dir: Path


def resolve_checkpoint(ckpt: str | os.PathLike, config: str | os.PathLike | None) -> Checkpoint:
    """``RUN`` (-> ``RUN/model_final.safetensors``) or a weights file, ``config.yaml`` beside it.

    Raises:
        ValueError: the checkpoint or its config does not exist (one line naming the path).
    """
    path = Path(ckpt)
    if path.is_dir():
        weights, run_dir = path / WEIGHTS_NAME, path
        if not weights.is_file():
            raise ValueError(f"{path}: no {WEIGHTS_NAME} in it (a finished fine-tuning run?)")
    elif path.is_file():
        weights, run_dir = path, path.parent
    else:
        raise ValueError(f"checkpoint {path} does not exist")
    cfg_path = Path(config) if config is not None else run_dir / CONFIG_NAME
    if not cfg_path.is_file():
        hint = "" if config is not None else " (pass the run's config with --config)"
        raise ValueError(f"config {cfg_path} does not exist{hint}")
    return Checkpoint(weights, cfg_path, run_dir)


def model_categories(data: DataConfig, checkpoint: Checkpoint) -> CategoryTable:
    """The model's training categories: its record (``model_final.safetensors`` metadata, or
    the run's ``categories.json``), else ``data.train_ann``'s with a warning: the same lookup
    as ``drcl evaluate --checkpoint`` (:func:`drcl.finetune.runner.checkpoint_categories`)."""
    from drcl.finetune.runner import checkpoint_categories

    if categories_missing(checkpoint) and not Path(data.train_ann).is_file():
        raise ValueError(
            f"{checkpoint.weights}: no category record, and data.train_ann "
            f"{data.train_ann} does not exist: the model's labels cannot be named"
        )
    return checkpoint_categories(data, checkpoint.weights)


def categories_missing(checkpoint: Checkpoint) -> bool:
    from drcl.data.categories import categories_for_checkpoint

    return categories_for_checkpoint(checkpoint.weights) is None


def match_file_categories(
    data: DataConfig, table: CategoryTable, ann: str | os.PathLike
) -> CategoryMatch:
    """An annotation file's categories matched to the model's by id (one warning line when
    they differ; a renamed id refused unless ``data.allow_category_mismatch``)."""
    match = match_categories(table, _categories_of(ann), ann, data.allow_category_mismatch)
    if not match.exact:
        log.warning("%s", match.line(table))
    return match


@dataclass(frozen=True)
class PredictJob:
    """Everything ``drcl predict`` needs, resolved and checked before the model is built.

    Attributes:
        cfg: the run's config with the test settings (score threshold, detections per image).
        checkpoint: weights, config and run folder.
        categories: the model's training categories (labels -> ids, names, groups).
        keep_ids: category ids written (those of ``--ann``, matched by id); None: all.
        items: the input images.
        out: the results json.
        draw_dir: where drawings go (None: no drawing).
        draw_thr: lowest score drawn.
        batch_size: images per forward pass.
        device: where the model runs.
    """

    cfg: Config
    checkpoint: Checkpoint
    categories: CategoryTable
    items: list[ImageItem]
    out: Path
    draw_dir: Path | None = None
    draw_thr: float = DEFAULT_DRAW_THR
    batch_size: int = 8
    device: str = "auto"
    keep_ids: tuple[int, ...] | None = None

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        checkpoint: Checkpoint,
        items: list[ImageItem],
        out: str | os.PathLike,
        **options: Any,
    ) -> PredictJob:
        """The job for ``cfg`` (a run's config); ``options`` override the config's defaults:
        ``score_thr``, ``max_dets`` (the detector's test settings), ``batch_size``, ``device``,
        ``draw_dir``, ``draw_thr``, ``ann`` (a file whose categories are matched by id: only
        shared ids are written). ``None`` keeps the default."""
        ft = cfg.finetune
        if options.get("score_thr") is not None:
            ft.score_thresh = float(options["score_thr"])
        if options.get("max_dets") is not None:
            ft.detections_per_img = int(options["max_dets"])
        draw = options.get("draw_dir")
        table = model_categories(cfg.data, checkpoint)
        ann = options.get("ann")
        keep = None if ann is None else match_file_categories(cfg.data, table, ann).shared
        return cls(
            cfg=cfg,
            checkpoint=checkpoint,
            categories=table,
            keep_ids=keep,
            items=items,
            out=Path(out),
            draw_dir=None if draw is None else Path(draw),
            draw_thr=_default(options.get("draw_thr"), DEFAULT_DRAW_THR),
            batch_size=int(_default(options.get("batch_size"), ft.eval_batch_size)),
            device=str(_default(options.get("device"), cfg.train.device)),
        )


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def load_run_config(checkpoint: Checkpoint, overrides: list[str] | None = None) -> Config:
    """The run's resolved config, with ``key=value`` overrides."""
    return load_config(checkpoint.config, overrides)


def build_predictor(job: PredictJob, device: torch.device) -> torch.nn.Module:
    """The detector of the run's config with the checkpoint's weights (strict), in eval mode."""
    from drcl.finetune.runner import detector_for

    num_classes = job.categories.num_classes
    # Test scores never use class frequencies; ones let federated / ECM models be built.
    model = detector_for(job.cfg, num_classes, torch.ones(num_classes))
    report = load_detector_weights(model, job.checkpoint.weights)
    log.debug("%s", report.table())
    return model.eval().to(device)


@dataclass
class PredictResult:
    """What a prediction run did: images read, detections written, failures, wall time."""

    out: Path
    num_images: int = 0
    num_detections: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else float("nan")


def check_outputs(
    job: PredictJob, inputs: dict[str, Path], images_root: Path | None = None
) -> None:
    """Refuse outputs that would overwrite an input; prove the outputs writable. Before any work.

    The results json and its ``.images.json`` must not be one of ``inputs`` (checkpoint,
    config, annotation file: ``{label: path}``) or an input image (same path, link or hard
    link: :func:`drcl.utils.io.refuse_overwriting_inputs`); no drawing may land on an input
    image; with a plain folder (``images_root``), ``--draw`` must not lie inside it (the next
    run would read the drawings as images).

    Raises:
        ValueError: one line naming the option and the path.
    """
    images = {f"image {it.file_name}": it.path for it in job.items}
    check_output_file(job.out, inputs={**inputs, **images})
    refuse_overwriting_inputs(images_list_path(job.out), {**inputs, **images})
    if job.draw_dir is None:
        return
    draw = _real(job.draw_dir)
    if images_root is not None and _real(images_root) in (draw, *draw.parents):
        raise ValueError(
            f"--draw {job.draw_dir}: inside the image folder {images_root} (the next run would "
            "read the drawings as images); choose another folder"
        )
    taken = {_real(p) for p in images.values()}  # a set: one lookup per drawing
    for name in drawing_names([it.file_name for it in job.items]):
        if _real(job.draw_dir / name) in taken:
            raise ValueError(f"--draw {job.draw_dir}: would overwrite the input image {name}")
    check_output_dir(job.draw_dir, "--draw")


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def run_predict(job: PredictJob) -> PredictResult:
    """Run the detector over ``job.items``; write the COCO results json (and drawings).

    Unreadable images are logged by name, counted in ``failures`` and left out; the rest is
    written. The json (records sorted by image, then by decreasing score) and each drawing are
    written atomically.
    """
    device = resolve_device(job.device)
    model = build_predictor(job, device)
    keep = None if job.keep_ids is None else set(job.keep_ids)
    labels = job.categories.records  # label k -> records[k - 1]
    names = drawing_names([it.file_name for it in job.items]) if job.draw_dir else []
    loader = torch.utils.data.DataLoader(
        ImageListDataset(job.items),
        batch_size=job.batch_size,
        num_workers=resolve_num_workers(job.cfg.data.num_workers, device),  # -1: for the machine
        collate_fn=collate_readable,
    )
    result, records, sizes = PredictResult(job.out), [], {}
    start = time.perf_counter()
    with _progress(len(job.items)) as bar:
        for images, infos, failed in loader:
            for info in failed:
                _note_failure(job.items[info["index"]], info["error"], result)
            for targets, outputs in predict_batches(model, [(images, infos)], device):
                for image, info, out in zip(images, targets, outputs, strict=True):
                    image_id = info["image_id"]
                    records.extend(detections_to_records(out, image_id, job.categories, keep))
                    sizes[info["index"]] = tuple(image.shape[1:])
                    if job.draw_dir is not None:
                        drawn = draw_detections(image, out, labels, job.draw_thr)
                        save_png(drawn, job.draw_dir / names[info["index"]])
            result.num_images += len(images)
            bar.update(len(images) + len(failed))
    result.seconds = time.perf_counter() - start
    records.sort(key=lambda r: (int(r["image_id"]), -float(r["score"])))
    atomic_write_json(job.out, records)
    result.num_detections = len(records)
    _write_image_list(job, sizes)
    return result


def _progress(total: int):
    from tqdm import tqdm

    # stderr, shown on a terminal only (disable=None): logs and pipes stay clean
    return tqdm(total=total, unit="img", desc="predict", disable=None, file=sys.stderr)


def _note_failure(item: ImageItem, reason: str, result: PredictResult) -> None:
    log.warning("%s: skipped: %s", item.path, reason)
    result.failures.append(Failure(item.file_name, reason))


def images_list_path(out: Path) -> Path:
    """``preds.json`` -> ``preds.images.json``: which file each image id is."""
    return out.with_name(f"{out.stem}.images.json")


def _write_image_list(job: PredictJob, sizes: dict[int, tuple[int, int]]) -> None:
    """A COCO ``images`` / ``categories`` json beside the results: ids -> files, and the labels."""
    images = [
        {"id": it.image_id, "file_name": it.file_name, "height": h, "width": w}
        for k, it in enumerate(job.items)
        if k in sizes
        for h, w in [sizes[k]]
    ]
    cats = [{"id": c.id, "name": c.name, "frequency": c.frequency} for c in job.categories.records]
    atomic_write_json(images_list_path(job.out), {"images": images, "categories": cats})


# ---- drcl test ---------------------------------------------------------------------------------


def default_test_dir(checkpoint: Checkpoint, gt: str | os.PathLike) -> Path:
    """``RUN/eval-<annotation file stem>`` (``eval-val``, ``eval-test``): beside the run's
    ``eval/``, never over it; the folder ``drcl evaluate --checkpoint`` uses for that split."""
    return checkpoint.run_dir / f"eval-{Path(gt).stem}"


def check_test_dir(out_dir: Path, checkpoint: Checkpoint) -> Path:
    """Refuse the run's own ``eval/`` and the run folder itself; prove ``out_dir`` writable."""
    for forbidden, what in ((checkpoint.run_dir / EVAL_DIR, "the run's own evaluation"),
                            (checkpoint.run_dir, "the run folder")):  # fmt: skip
        if out_dir.resolve() == forbidden.resolve():
            raise ValueError(f"--out {out_dir}: is {what} ({forbidden}); choose another folder")
    return check_output_dir(out_dir)


def evaluate_predictions(
    job: PredictJob, gt: str | os.PathLike, train_ann: str | os.PathLike | None, out_dir: Path
) -> dict[str, dict[str, Any]]:
    """``metrics_{iou_type}.json`` of ``job.out`` against ``gt`` in ``out_dir``, as fine-tuning's
    evaluation writes them (same rules, groups thresholds and category-match note)."""
    from drcl.evaluation.lvis_eval import evaluate_detections, json_safe
    from drcl.finetune.job import iou_types_of

    cfg = job.cfg
    match = match_categories(job.categories, _categories_of(gt), gt, True)
    results = {}
    for t in iou_types_of(cfg.finetune.arch):  # as fine-tuning's evaluation
        results[t] = evaluate_detections(
            gt,
            str(job.out),
            t,
            train_ann,
            max_dets=cfg.finetune.detections_per_img,
            rare_max=cfg.data.groups.rare_max,
            common_max=cfg.data.groups.common_max,
        )
        if not match.exact:
            results[t]["notes"] = [match.line(job.categories), *results[t].get("notes", [])]
        atomic_write_json(out_dir / metrics_name(t), json_safe(results[t]), indent=1)
    return results


def _categories_of(ann: str | os.PathLike) -> list[dict]:
    from drcl.utils.io import read_json

    data = read_json(ann)
    return data.get("categories", []) if isinstance(data, dict) else []
