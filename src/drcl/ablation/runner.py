"""``drcl ablate``: run every row of the grid with K seeds, then statistics and tables.

Layout of ``WORK_DIR``::

    generic/                       the generic backbone (made once unless the config names one)
    ROW/seed{s}/pretrain/          2DRCL pre-training of a pre-trained row (seed s)
    ROW/seed{s}/box/               the box-domain stage of a box row (``2drcl_box`` takes its
                                   2DRCL checkpoint from ``2drcl/seed{s}/pretrain/``)
    ROW/seed{s}/finetune/          fine-tuning; eval/metrics_bbox.json marks it finished
    ROW/seed{s}/wall_time.json     seconds this (row, seed) took when it ran
    results.json, ablation.md, ablation.csv   rewritten after every (row, seed)

Seeds run in the outer loop, so a full single-seed table exists after the first pass. Every
finished (row, seed) is skipped, an interrupted one resumes from its last checkpoint. All
fine-tuning configs are built and checked (:func:`check_fair`) before anything runs.

The fair protocol: every compared row fine-tunes with one recipe; only the init differs.

All fine-tuning configs of a grid are built by :func:`finetune_config` from the same file and the
same overrides plus the seed; the row adds only its initial weights (``finetune.init``,
``model.weights``) and, for the equal-compute control, its longer schedule (``train.max_iters``).
:func:`check_fair` then compares the resolved configs with exactly those keys removed and refuses
the grid if any two rows differ, naming the keys: a per-row override, a default that depends on
the init, or a future code path cannot slip a second difference into a comparison.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from drcl.ablation.curve import CurveConfig
from drcl.ablation.dose import dose_in_epochs, dose_of, dose_overrides
from drcl.ablation.results import CI_METHOD, METRICS, csv_table, markdown_table, summarize
from drcl.ablation.rows import COMPONENTS, DEFAULT_ROWS, ROWS, RowSpec, component_overrides
from drcl.config import Config, ConfigError, load_config
from drcl.finetune.job import FinetuneJob
from drcl.generic.job import GenericJob
from drcl.generic.recipe import GenericRecipe
from drcl.utils.io import atomic_write_json, atomic_write_text, ensure_writable_dir
from drcl.utils.run_dir import RunDir

log = logging.getLogger(__name__)

# What a row may change in its fine-tuning config: its initial weights.
INIT_KEYS = ("finetune.init", "model.weights")
# The equal-compute control fine-tunes longer by design (checked separately: exactly as long as
# pre-training plus fine-tuning of a pre-trained row).
EQUAL_COMPUTE_KEYS = ("train.max_iters",)
# What fine-tuning reads of the config (a FinetuneJob's sections; not ``pretrain``).
FINETUNE_SECTIONS = ("data", "model", "train", "finetune")


class UnfairComparisonError(ConfigError):
    """Two rows of a comparison would fine-tune with different recipes."""


@dataclass
class DetectorProposals:
    """Rows whose 2DRCL pre-training contrasts the class-agnostic detector's boxes (issue 20).

    The detector is trained and run once per grid (``drcl proposals`` on the pre-training recipe
    with ``pretrain.proposals.source=detector`` and ``overrides``) into ``WORK_DIR/proposals/``,
    unless ``file`` names a proposals json; every seed and dose of the listed rows reads it.
    """

    rows: list[str] = field(default_factory=list)  # row names (``full`` covers ``full@12ep``)
    overrides: list[str] = field(default_factory=list)  # e.g. pretrain.proposals.top_n=50
    file: str | None = None


@dataclass
class AblateConfig:
    """An ablation: which recipes, which rows, how many seeds, and the generic backbone."""

    pretrain_config: str = "../pretrain/demo.yaml"  # relative to the ablation file
    finetune_config: str = "../finetune/demo.yaml"
    overrides: list[str] = field(default_factory=list)  # applied to both stages
    pretrain_overrides: list[str] = field(default_factory=list)
    finetune_overrides: list[str] = field(default_factory=list)
    # per row, applied to every stage of that row; a fine-tuning difference is refused
    row_overrides: dict[str, list[str]] = field(default_factory=dict)
    rows: list[str] = field(default_factory=lambda: list(DEFAULT_ROWS))
    # the box-domain stage of the box rows (pretrain.stage=box): its recipe and overrides
    box_config: str = "../pretrain/demo_box.yaml"
    box_overrides: list[str] = field(default_factory=list)
    baseline: str = "generic"
    seeds: int = 3
    generic: GenericRecipe = field(default_factory=GenericRecipe)
    # issue 20: the pre-training length of every pre-trained row, in epochs of the training set
    # (0: the pre-training recipe's train.max_iters); a row ROW@Nep has its own (drcl.ablation.dose)
    pretrain_epochs: float = 0.0
    # > 0: pre-training logs the crop probe every this many epochs (pretrain.probe.every)
    probe_every_epochs: float = 0.0
    proposals: DetectorProposals = field(default_factory=DetectorProposals)
    # rows that run fewer seeds than ``seeds`` (the first N): {row: N}, e.g. a costly dose
    row_seeds: dict[str, int] = field(default_factory=dict)
    # the fine-tuning length curve on the tune split (python -m drcl.ablation.curve)
    curve: CurveConfig = field(default_factory=CurveConfig)


_ABLATE_KEYS = set(AblateConfig.__dataclass_fields__)


def load_ablate_config(path: str | Path, overrides: list[str] | None = None) -> AblateConfig:
    """Read an ablation YAML onto :class:`AblateConfig`; recipe paths are relative to it."""
    # An override of a key of the ablation file (``seeds=2``, ``generic.iters=50``) changes it;
    # any other (``train.lr=0.01``, ``data.train_ann=...``) goes to both stages of every row.
    own = [o for o in overrides or [] if o.split("=")[0].split(".")[0] in _ABLATE_KEYS]
    stages = [o for o in overrides or [] if o not in own]
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(AblateConfig), OmegaConf.load(path))
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(own))
        cfg.overrides = [*cfg.overrides, *stages]
    except (OmegaConfBaseException, OSError) as err:
        raise ConfigError(f"{path}: {err}") from err
    unknown = [r for r in [*cfg.rows, *cfg.row_overrides] if r not in ROWS]
    if unknown:
        raise ConfigError(f"{path}: key 'rows': unknown {unknown}, allowed: {', '.join(ROWS)}")
    if cfg.baseline not in cfg.rows:
        raise ConfigError(f"{path}: key 'baseline': {cfg.baseline!r} is not one of rows")
    if cfg.seeds < 1:
        raise ConfigError(f"{path}: key 'seeds': must be >= 1, got {cfg.seeds}")
    _check_dose_keys(cfg, path)
    base = Path(path).parent
    cfg.pretrain_config = str(base / cfg.pretrain_config)
    cfg.finetune_config = str(base / cfg.finetune_config)
    cfg.box_config = str(base / cfg.box_config)
    return cfg  # type: ignore[return-value]


def _check_dose_keys(cfg: AblateConfig, path: str | Path) -> None:
    if cfg.pretrain_epochs < 0 or cfg.probe_every_epochs < 0:
        raise ConfigError(f"{path}: keys 'pretrain_epochs', 'probe_every_epochs' must be >= 0")
    if any(n < 1 for n in cfg.row_seeds.values()) or set(cfg.row_seeds) - set(cfg.rows):
        raise ConfigError(f"{path}: key 'row_seeds': rows of 'rows' with >= 1 seed, got "
                          f"{dict(cfg.row_seeds)}")  # fmt: skip
    bad = [r for r in cfg.proposals.rows if r not in ROWS or ROWS[r].components is None]
    if bad:
        raise ConfigError(f"{path}: key 'proposals.rows': {bad} are not rows with 2DRCL")


def row_seed_count(cfg: AblateConfig, row: str) -> int:
    """How many seeds ``row`` runs: ``row_seeds[row]`` if set, else ``seeds``."""
    return min(cfg.seeds, cfg.row_seeds.get(row, cfg.seeds))


def _base_row(row: str) -> str:
    return row.split("@")[0]


def resolve_grid(cfg: AblateConfig, work_dir: Path) -> AblateConfig:
    """Fix what depends on the data and the work dir, before planning (idempotent): the grid's
    dose in epochs becomes the pre-training ``train.max_iters``, and the proposals file of the
    detector-proposal rows gets its path."""
    if cfg.pretrain_epochs > 0:
        pre = stage_config(cfg, "pretrain")
        dose = f"train.max_iters={dose_in_epochs(pre.data, pre.train, cfg.pretrain_epochs).iters}"
        if not cfg.pretrain_overrides or cfg.pretrain_overrides[-1] != dose:
            cfg.pretrain_overrides = [*cfg.pretrain_overrides, dose]
    if cfg.proposals.rows and cfg.proposals.file is None:
        cfg.proposals.file = str(work_dir / "proposals" / "detector.json")
    return cfg


def stage_overrides(cfg: AblateConfig, stage: str) -> list[str]:
    """What every config of a stage (``pretrain``, ``box``, ``finetune``) of the grid starts
    from: the shared ``overrides``, then the stage's own; rows and seeds add to it."""
    own = {
        "pretrain": cfg.pretrain_overrides,
        "box": cfg.box_overrides,
        "finetune": cfg.finetune_overrides,
    }[stage]
    return [*cfg.overrides, *own]


def stage_config(
    cfg: AblateConfig,
    stage: str,
    row: str | None = None,
    seed: int | None = None,
    extra: list[str] | tuple[str, ...] = (),
) -> Config:
    """The one builder of the grid's stage configs (``pretrain``, ``box``, ``finetune``).

    The stage's recipe file with, in this order: :func:`stage_overrides`; for ``row``, what the
    row changes in that stage (pre-training: its 2DRCL terms, then ``row_overrides``, then its
    detector proposals; other stages: ``row_overrides``); ``train.seed=seed``; then ``extra``
    (the stage's inputs: weights, init, schedule length).
    """
    path = {"pretrain": cfg.pretrain_config, "box": cfg.box_config}.get(stage)
    path = cfg.finetune_config if stage == "finetune" else path
    if path is None:
        raise ValueError(f"stage {stage!r}: allowed pretrain, box, finetune")
    args = stage_overrides(cfg, stage)
    if row is not None:
        args += _row_overrides(cfg, stage, row)
    if seed is not None:
        args.append(f"train.seed={seed}")
    return load_config(path, [*args, *extra])


def _row_overrides(cfg: AblateConfig, stage: str, row: str) -> list[str]:
    own = list(cfg.row_overrides.get(row, []))
    if stage != "pretrain":
        return own
    components = ROWS[row].components
    terms = component_overrides(components) if components is not None else []
    return [*terms, *own, *_proposal_overrides(cfg, row)]


def _proposal_overrides(cfg: AblateConfig, row: str) -> list[str]:
    if _base_row(row) not in cfg.proposals.rows:
        return []
    if cfg.proposals.file is None:
        raise ConfigError(f"row {row}: detector proposals have no file yet (call resolve_grid)")
    return ["pretrain.proposals.source=detector", f"pretrain.proposals.file={cfg.proposals.file}"]


def pretrain_config(cfg: AblateConfig, row: str, seed: int, generic: str | None) -> Config:
    """The pre-training config of a pre-trained row: its terms, its seed, its starting weights,
    its proposals and its dose (``ROW@Nep``: N epochs of the training set)."""
    spec = ROWS[row]
    if spec.components is None:
        raise ValueError(f"row {row!r} has no pre-training")
    weights = [f"model.weights={_yaml_path(generic if spec.init == 'generic' else None)}"]
    pre = stage_config(cfg, "pretrain", row, seed, weights)
    dose = dose_overrides(pre.data, pre.train, spec.pretrain_epochs, cfg.probe_every_epochs)
    return stage_config(cfg, "pretrain", row, seed, [*weights, *dose]) if dose else pre


def row_doses(cfg: AblateConfig, plans: dict[str, FinetuneJob]) -> dict[str, dict[str, Any]]:
    """Per row: its pre-training dose (epochs, iterations; 0 without 2DRCL) and fine-tuning
    iterations, for ``results.json``. Builds every pre-training config, so a bad one fails now."""
    out = {}
    for row, ft in plans.items():
        entry = {"pretrain_epochs": 0.0, "pretrain_iters": 0, "finetune_iters": ft.train.max_iters}
        if ROWS[row].components is not None:
            pre = pretrain_config(cfg, row, 0, None)
            try:
                dose = dose_of(pre.data, pre.train)
                entry.update(pretrain_epochs=dose.epochs, pretrain_iters=dose.iters)
            except ConfigError:  # no training annotations to count epochs by (a stubbed run)
                entry.update(pretrain_epochs=None, pretrain_iters=pre.train.max_iters)
        out[row] = entry
    return out


def ensure_proposals(cfg: AblateConfig, work_dir: Path) -> str | None:
    """The detector proposals of the grid; trains and runs the detector once if needed."""
    if not cfg.proposals.rows:
        return None
    path = Path(resolve_grid(cfg, work_dir).proposals.file)
    if path.is_file():
        return str(path)
    if path.parent != work_dir / "proposals":
        raise FileNotFoundError(f"proposals.file: file not found: {path}")
    from drcl.proposals.job import ProposalsJob
    from drcl.proposals.runner import run_proposals

    log.info("\n=== detector proposals (class-agnostic Faster R-CNN; made once)")
    det = stage_config(
        cfg, "pretrain", extra=["pretrain.proposals.source=detector", *cfg.proposals.overrides]
    )
    return str(run_proposals(ProposalsJob.from_config(det, path)))


def box_stage_config(
    cfg: AblateConfig, row: str, seed: int, image_ckpt: str | None, generic: str | None
) -> Config:
    """The box-domain stage of a box row: ``box_config`` on the row's 2DRCL checkpoint
    (``pretrain.box.init``), or, for a row without 2DRCL, on its ``init`` backbone."""
    spec = ROWS[row]
    if not spec.box_stage:
        raise ValueError(f"row {row!r} has no box stage")
    weights = generic if (image_ckpt is None and spec.init == "generic") else None
    inputs = [f"pretrain.box.init={_yaml_path(image_ckpt)}", f"model.weights={_yaml_path(weights)}"]
    box = stage_config(cfg, "box", row, seed, inputs)
    if box.pretrain.stage != "box":
        raise ConfigError(f"box_config {cfg.box_config}: pretrain.stage must be box")
    return box


def image_stage_dir(work_dir: Path, row: str, seed: int) -> Path:
    """Where the 2DRCL pre-training of ``row`` at ``seed`` runs (shared for ``image_stage_of``)."""
    return seed_dir(work_dir, ROWS[row].image_stage_of or row, seed) / "pretrain"


def row_init_path(work_dir: Path, row: str, seed: int) -> Path | None:
    """The checkpoint the row fine-tunes from: its box stage's, else its 2DRCL's, else None."""
    spec = ROWS[row]
    if spec.box_stage:
        return RunDir(seed_dir(work_dir, row, seed) / "box").pretrained
    if spec.components is not None:
        return RunDir(image_stage_dir(work_dir, row, seed)).pretrained
    return None


def equal_compute_iters(cfg: AblateConfig, seed: int = 0) -> int:
    """Fine-tuning iterations that see as many images as pre-training + fine-tuning together.

    An iteration is one optimizer step of ``batch_size * accumulate`` images, so
    ``ceil((pre_iters * pre_images + ft_iters * ft_images) / ft_images)`` with
    ``images = batch_size * accumulate``, the pre-training of the full row (every row pre-trains
    equally long).
    """
    pre = stage_config(cfg, "pretrain", extra=component_overrides(COMPONENTS))
    ft = stage_config(cfg, "finetune", seed=seed)
    for name, c in (("pre-training", pre), ("fine-tuning", ft)):
        if c.train.max_iters <= 0:
            raise ConfigError(f"equal_compute row: {name} must set train.max_iters (> 0)")
    pre_step, ft_step = (c.train.batch_size * c.train.accumulate for c in (pre, ft))
    seen = pre.train.max_iters * pre_step + ft.train.max_iters * ft_step
    return math.ceil(seen / ft_step)


def finetune_config(
    cfg: AblateConfig,
    row: str,
    seed: int,
    init: str | None,
    generic: str | None,
    equal_iters: int | None = None,
) -> Config:
    """The fine-tuning config of ``row`` at ``seed``: the shared recipe plus the row's init.

    Args:
        init: the row's pre-trained weights (``finetune.init``), None for a row without.
        generic: the generic backbone (``model.weights``) of a generic-init row without
            pre-training; a pre-trained row gets its backbone from ``init``.
        equal_iters: ``train.max_iters`` of the equal-compute row.
    """
    spec = ROWS[row]
    weights = generic if (spec.init == "generic" and not spec.pretrained) else None
    inputs = [f"finetune.init={_yaml_path(init)}", f"model.weights={_yaml_path(weights)}"]
    if spec.equal_compute:
        inputs.append(f"train.max_iters={equal_iters or equal_compute_iters(cfg, seed)}")
    return stage_config(cfg, "finetune", row, seed, inputs)


def _yaml_path(path: str | Path | None) -> str:
    return "null" if path is None else str(path)


def canonical_recipe(job: FinetuneJob, spec: RowSpec) -> dict[str, Any]:
    """What the fine-tuning job reads (its resolved sections) as a flat ``{dotted.key: value}``
    dict, the init removed (and the schedule length, for the equal-compute row)."""
    sections = {name: getattr(job, name) for name in FINETUNE_SECTIONS}
    flat = _flatten({k: OmegaConf.to_container(v, resolve=True) for k, v in sections.items()})
    drop = set(INIT_KEYS) | (set(EQUAL_COMPUTE_KEYS) if spec.equal_compute else set())
    return {k: v for k, v in flat.items() if k not in drop}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


def check_fair(configs: dict[str, FinetuneJob], equal_iters: int | None = None) -> str:
    """Refuse a comparison whose rows fine-tune with different recipes; return the recipe hash.

    Args:
        configs: row name -> its fine-tuning job, all at the same seed.
        equal_iters: the schedule the equal-compute row must have (checked when given).

    Returns:
        sha256 (hex, 16 digits) of the shared recipe with the seed removed: equal hashes, equal
        recipes, across grids and seeds.

    Raises:
        UnfairComparisonError: naming each row and key that differs from the first row.
    """
    if not configs:
        raise ValueError("check_fair: no rows to compare")
    canon = {row: canonical_recipe(c, ROWS[row]) for row, c in configs.items()}
    # the reference: the first row with the plain schedule (all rows, if only equal-compute)
    ref_row = next((r for r in canon if not ROWS[r].equal_compute), next(iter(canon)))
    ref = canon[ref_row]
    problems = []
    for row, c in canon.items():
        skip = set(EQUAL_COMPUTE_KEYS) if ROWS[row].equal_compute else set()
        keys = sorted(
            k for k in (set(ref) | set(c)) - skip if ref.get(k, _MISSING) != c.get(k, _MISSING)
        )
        problems += [f"{k}: {ref_row}={ref.get(k)!r} vs {row}={c.get(k)!r}" for k in keys]
    for row, c in configs.items():
        if ROWS[row].equal_compute and equal_iters is not None:
            if c.train.max_iters != equal_iters:
                problems.append(
                    f"train.max_iters: {row}={c.train.max_iters} vs {equal_iters} "
                    "(pre-training + fine-tuning images / fine-tuning batch)"
                )
    if problems:
        raise UnfairComparisonError(
            "unfair comparison: rows must fine-tune with the identical recipe except the init, "
            "but these keys differ: " + "; ".join(problems)
        )
    shared = {k: v for k, v in ref.items() if k != "train.seed"}
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


_MISSING = object()


def seed_dir(work_dir: Path, row: str, seed: int) -> Path:
    return work_dir / row / f"seed{seed}"


def _finetune_dir(work_dir: Path, row: str, seed: int) -> Path:
    return seed_dir(work_dir, row, seed) / "finetune"


def _metrics_file(work_dir: Path, row: str, seed: int) -> Path:
    return RunDir(_finetune_dir(work_dir, row, seed)).eval_metrics()


def generic_weights_path(cfg: AblateConfig, work_dir: Path) -> str | None:
    """The generic backbone the grid uses (None when no row starts from it)."""
    if not any(ROWS[r].init == "generic" for r in cfg.rows):
        return None
    return cfg.generic.weights or str(_generic_job(cfg, work_dir).weights)


def plan_finetune_configs(
    cfg: AblateConfig, work_dir: Path, seeds: list[int]
) -> tuple[dict[int, dict[str, FinetuneJob]], str]:
    """Every (seed, row) fine-tuning job (into ``ROW/seed{s}/finetune``, resumed), checked for
    fairness; and the recipe hash.

    Raises:
        UnfairComparisonError: two rows at a seed differ in more than the init.
    """
    generic = generic_weights_path(cfg, work_dir)
    needs_equal = any(ROWS[r].equal_compute for r in cfg.rows)
    equal_iters = equal_compute_iters(cfg) if needs_equal else None
    plans: dict[int, dict[str, FinetuneJob]] = {}
    hashes = set()
    for seed in seeds:
        plans[seed] = {}
        for row in cfg.rows:
            init = row_init_path(work_dir, row, seed)
            ft = finetune_config(
                cfg, row, seed, None if init is None else str(init), generic, equal_iters
            )
            plans[seed][row] = FinetuneJob.from_config(
                ft, _finetune_dir(work_dir, row, seed), resume=True
            )
        hashes.add(check_fair(plans[seed], equal_iters))
        for row in (r for r in cfg.rows if ROWS[r].box_stage):  # a bad box recipe fails now
            image = ROWS[row].components is not None
            image_ckpt = RunDir(image_stage_dir(work_dir, row, seed)).pretrained
            box_stage_config(cfg, row, seed, str(image_ckpt) if image else None, generic)
    if len(hashes) != 1:  # the recipe may only change with the seed
        raise ConfigError(f"fine-tuning recipe differs between seeds: hashes {sorted(hashes)}")
    if generic is not None:
        depth = plans[seeds[0]][cfg.rows[0]].model.depth
        if depth != cfg.generic.depth and cfg.generic.weights is None:
            raise ConfigError(f"generic.depth={cfg.generic.depth} but model.depth={depth}")
    return plans, hashes.pop()


def ensure_generic(cfg: AblateConfig, work_dir: Path) -> str | None:
    """The generic backbone's path; trains it into ``WORK_DIR/generic`` once if not given."""
    path = generic_weights_path(cfg, work_dir)
    if path is None or Path(path).is_file():
        return path
    if cfg.generic.weights:
        raise FileNotFoundError(f"generic.weights: file not found: {path}")
    from drcl.generic.train import run_generic

    log.info("\n=== generic backbone (supervised, class-balanced; made once)")
    job = _generic_job(cfg, work_dir)
    run_generic(job)
    return str(job.weights)


def _generic_job(cfg: AblateConfig, work_dir: Path) -> GenericJob:
    """The grid's generic backbone, made in ``WORK_DIR/generic`` (checks the recipe)."""
    return GenericJob.from_config(cfg.generic, work_dir / "generic")


def run_row_seed(
    cfg: AblateConfig, row: str, seed: int, ft: FinetuneJob, generic: str | None, work_dir: Path
) -> dict[str, Any]:
    """Pre-train (2DRCL and/or the box stage of a pre-trained row), fine-tune (``ft``, planned
    by :func:`plan_finetune_configs`) and evaluate one (row, seed); its box metrics."""
    from drcl.finetune.runner import run_finetune
    from drcl.pretrain.job import PretrainJob
    from drcl.pretrain.runner import run_pretrain

    out = seed_dir(work_dir, row, seed)
    metrics = _metrics_file(work_dir, row, seed)
    if metrics.is_file():
        return json.loads(metrics.read_text())
    start = time.perf_counter()
    spec, image = ROWS[row], None
    if spec.components is not None:
        image = RunDir(image_stage_dir(work_dir, row, seed)).pretrained
        if not image.is_file():  # a shared image stage runs once, for whichever row comes first
            image_row = spec.image_stage_of or row
            pre_cfg = pretrain_config(cfg, image_row, seed, generic)
            run_pretrain(PretrainJob.from_config(pre_cfg, image.parent, resume=True))
    if spec.box_stage:
        box = RunDir(out / "box").pretrained
        if not box.is_file():
            ckpt = None if image is None else str(image)
            box_cfg = box_stage_config(cfg, row, seed, ckpt, generic)
            run_pretrain(PretrainJob.from_config(box_cfg, box.parent, resume=True))
    run_finetune(ft)
    atomic_write_json(out / "wall_time.json", {"seconds": round(time.perf_counter() - start, 1)})
    return json.loads(metrics.read_text())


def _finished(cfg: AblateConfig, work_dir: Path, seeds: list[int]) -> dict[str, dict[int, Any]]:
    done: dict[str, dict[int, Any]] = {row: {} for row in cfg.rows}
    for row in cfg.rows:
        for s in seeds:
            if _metrics_file(work_dir, row, s).is_file():
                done[row][s] = json.loads(_metrics_file(work_dir, row, s).read_text())
    return done


def _wall_times(cfg: AblateConfig, work_dir: Path, seeds: list[int]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in cfg.rows:
        for s in seeds:
            f = seed_dir(work_dir, row, s) / "wall_time.json"
            if f.is_file():
                out.setdefault(row, {})[str(s)] = json.loads(f.read_text())["seconds"]
    return out


def write_results(
    cfg: AblateConfig,
    work_dir: Path,
    seeds: list[int],
    recipe: str,
    per_seed: dict,
    doses: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``results.json``, ``ablation.md`` and ``ablation.csv`` from what has finished."""
    done = {r: v for r, v in per_seed.items() if v}
    results = {
        **summarize(done, seeds, cfg.baseline, doses),
        "baseline": cfg.baseline,
        "seeds": seeds,
        "metrics": list(METRICS),
        "unit": "AP points (percent)",
        "ci_method": CI_METHOD,
        "finetune_recipe_sha256": recipe,
        "wall_time_s": _wall_times(cfg, work_dir, seeds),
        "complete": all(
            len(per_seed[r]) == min(len(seeds), row_seed_count(cfg, r)) for r in cfg.rows
        ),
    }
    atomic_write_json(work_dir / "results.json", results, indent=1)
    atomic_write_text(work_dir / "ablation.md", markdown_table(results))
    atomic_write_text(work_dir / "ablation.csv", csv_table(results))
    return results


def run_ablation(
    config: str | Path,
    work_dir: str | Path,
    overrides: list[str] | None = None,
    seeds: int | None = None,
) -> Path:
    """Run the grid of ``config`` with ``seeds`` seeds (0..K-1); returns ``results.json``."""
    cfg = load_ablate_config(config, overrides)
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        cfg.seeds = seeds
    seed_list = list(range(cfg.seeds))
    work_dir = ensure_writable_dir(work_dir)
    resolve_grid(cfg, work_dir)
    plans, recipe = plan_finetune_configs(cfg, work_dir, seed_list)  # refuses before any work
    doses = row_doses(cfg, plans[seed_list[0]])
    generic = ensure_generic(cfg, work_dir)
    ensure_proposals(cfg, work_dir)
    per_seed = _finished(cfg, work_dir, seed_list)
    jobs = [(s, r) for s in seed_list for r in cfg.rows if s < row_seed_count(cfg, r)]
    for n, (seed, row) in enumerate(jobs, 1):  # seed-major: a full seed-0 table comes first
        log.info("\n=== ablation %d/%d: row %s, seed %d", n, len(jobs), row, seed)
        per_seed[row][seed] = run_row_seed(cfg, row, seed, plans[seed][row], generic, work_dir)
        write_results(cfg, work_dir, seed_list, recipe, per_seed, doses)
    log.info("\n%s", (work_dir / "ablation.md").read_text())
    return work_dir / "results.json"
