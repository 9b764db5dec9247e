"""GenericJob: the generic backbone stage's recipe, checked once; the runner on a job makes what
``drcl pretrain-generic`` makes."""

import hashlib
from pathlib import Path

import pytest

from drcl.ablation.runner import load_ablate_config
from drcl.cli.main import main
from drcl.config import ConfigError
from drcl.generic.job import WEIGHTS, GenericJob
from drcl.generic.recipe import GenericRecipe
from drcl.generic.train import run_generic
from drcl.utils.run_dir import RunDir

ABLATE = Path(__file__).resolve().parents[2] / "configs" / "ablate" / "demo.yaml"


def test_job_of_the_shipped_ablation_recipe():
    cfg = load_ablate_config(ABLATE)
    job = GenericJob.from_config(cfg.generic, "w/generic")
    # configs/ablate/demo.yaml sets iters 1000; the rest are GenericRecipe's defaults (v2)
    r = job.recipe
    assert (r.iters, r.image_size, r.train_per_class, r.val_per_class) == (1000, 48, 40, 10)
    assert (r.depth, r.batch_size, r.lr, r.optimizer, r.head) == (18, 32, 1e-3, "adamw", "factors")
    assert r.weights is None and isinstance(r, GenericRecipe)
    assert job.weights == Path("w/generic") / WEIGHTS == Path("w/generic/generic.safetensors")
    cfg.generic.iters = 5  # the job keeps its own copy
    assert job.recipe.iters == 1000


@pytest.mark.parametrize(
    "change, message",
    [({"depth": 19}, "generic.depth: got 19, allowed: 18, 34, 50, 101"),
     ({"optimizer": "lamb"}, "generic.optimizer: got 'lamb', allowed: sgd, adamw"),
     ({"head": "x"}, "generic.head: got 'x', allowed: classes, factors"),
     ({"iters": 0}, "generic.iters: got 0, must be >= 1"),
     ({"image_size": 8}, "generic.image_size: got 8, must be >= 16"),
     ({"lr": 0.0}, "generic.lr must be > 0")],
)  # fmt: skip
def test_bad_values_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        GenericJob.from_config(GenericRecipe(**change), "w")


def test_runner_on_a_job_equals_the_command_line(tmp_path):
    small = {
        "image_size": 32,
        "train_per_class": 2,
        "val_per_class": 1,
        "iters": 2,
        "batch_size": 8,
    }
    argv = ["pretrain-generic", "--work-dir", str(tmp_path / "cli")]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in small.items()]
    assert main(argv) == 0
    run = run_generic(GenericJob.from_config(GenericRecipe(**small), tmp_path / "job"))
    assert run == RunDir(tmp_path / "job") and run.cost.is_file()
    digest = [
        hashlib.sha256((d / WEIGHTS).read_bytes()).hexdigest() for d in (tmp_path / "cli", run.path)
    ]
    assert digest[0] == digest[1]
