import re

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from drcl.config import ConfigError, load_config, save_config


def _write(path, text):
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["train.lr=0.01", "model.depth=50"])
    assert cfg.train.lr == 0.01
    assert cfg.model.depth == 50
    assert cfg.pretrain.lcl.boxes_per_image == 8  # paper A.1
    assert cfg.pretrain.lcl.temperature == 0.5


def test_base_inheritance_chain(tmp_path):
    _write(tmp_path / "a.yaml", "train:\n  lr: 0.1\n  epochs: 3\nmodel:\n  depth: 50\n")
    _write(tmp_path / "b.yaml", "_base_: a.yaml\ntrain:\n  epochs: 5\n")
    _write(tmp_path / "c.yaml", "_base_: [b.yaml]\nmodel:\n  depth: 101\n")
    cfg = load_config(tmp_path / "c.yaml", ["train.epochs=7"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.model.depth) == (0.1, 7, 101)


def test_unknown_key_names_the_key(tmp_path):
    path = _write(tmp_path / "x.yaml", "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match="lrr"):
        load_config(path)
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(None, ["train.nope=1"])


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=many"])


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match="allowed: ce, bce, federated, seesaw, ecm, focal, efl"):
        load_config(None, ["finetune.loss=hinge"])
    # a known loss of the other detector family names the ones this arch allows
    with pytest.raises(ConfigError, match="allowed with finetune.arch=faster_rcnn: ce, bce"):
        load_config(None, ["finetune.loss=focal"])


@pytest.mark.parametrize(
    "key, allowed",
    [
        ("data.on_error", "raise, skip"),
        ("model.norm", "bn, frozen_bn, sync_bn"),
        ("train.optimizer", "sgd, adamw"),
        ("train.schedule", "step, cosine"),
        ("train.amp", "none, bf16, fp16"),
        ("train.device", "auto, cpu, cuda"),
        ("train.nonfinite", "raise, skip"),
        ("pretrain.proposals.source", "gt, file, detector"),
        ("pretrain.hcl.loss", "byol, infonce"),
        ("pretrain.drb.schedule", "linear, cosine, step, none"),
        ("pretrain.ar.target", "pixel, object"),
        ("pretrain.ar.input", "masked, view"),
        ("finetune.arch", "faster_rcnn, mask_rcnn"),
        ("finetune.loss", "ce, bce, federated, seesaw, ecm"),
    ],
)
def test_every_choice_is_checked_at_load(tmp_path, key, allowed):
    message = f"key '{key}': got 'typo', allowed: {allowed}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [f"{key}=typo"])
    section, _, leaf = key.rpartition(".")
    yaml_text = "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(section.split(".")))
    path = _write(
        tmp_path / "c.yaml", yaml_text + "  " * (section.count(".") + 1) + f"{leaf}: typo\n"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)
    value = allowed.split(", ")[-1]
    cfg = load_config(None, [f"{key}={value}"])
    assert OmegaConf.select(cfg, key) == value and f"{OmegaConf.select(cfg, key)}" == value


def test_data_paths_are_required(tmp_path):
    cfg = load_config(None)
    for key in ("train_ann", "train_images", "val_ann", "val_images"):
        assert OmegaConf.is_missing(cfg.data, key)
    with pytest.raises(MissingMandatoryValue, match="data.train_ann"):
        _ = cfg.data.train_ann
    save_config(cfg, tmp_path / "c.yaml")  # a partial config can still be written
    assert "train_ann: ???" in (tmp_path / "c.yaml").read_text()


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = _write(tmp_path / "bad.yaml", "train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    loop = _write(tmp_path / "loop.yaml", "_base_: loop.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(loop)
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["train.lr"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=0.005", "pretrain.drb.schedule=linear"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert not list(tmp_path.glob(".*.tmp"))


def test_derive_config_merges_checks_and_leaves_the_input_alone():
    from drcl.config import derive_config

    base = load_config(None, ["train.max_iters=7"])
    out = derive_config(base, {"train.max_iters": 3, "finetune.arch": "mask_rcnn"})
    assert (out.train.max_iters, str(out.finetune.arch)) == (3, "mask_rcnn")
    assert (base.train.max_iters, str(base.finetune.arch)) == (7, "faster_rcnn")
    with pytest.raises(ConfigError, match="train.lr"):
        derive_config(base, {"train.lr": -1.0})  # ranges checked as when loading
    with pytest.raises(ConfigError, match="finetune.loss"):
        derive_config(base, {"finetune.arch": "atss"})  # ce is not a one-stage loss
    with pytest.raises(ConfigError):
        derive_config(base, {"train.no_such_key": 1})


def test_job_section_is_a_read_only_copy_with_its_required_keys_named():
    from omegaconf.errors import ReadonlyConfigError

    from drcl.config import Config, job_section

    cfg = load_config(None, ["data.train_ann=t.json", "pretrain.proposals.top_n=7"])
    data = job_section(cfg, "data", ("train_ann",))
    cfg.data.train_ann = "other.json"  # the copy does not follow
    assert data.train_ann == "t.json"
    with pytest.raises(ReadonlyConfigError):
        data.train_ann = "x.json"
    assert job_section(cfg, "pretrain.proposals").top_n == 7  # a dotted section
    with pytest.raises(ConfigError, match=r"^data\.val_images is required: set it in the config"):
        job_section(cfg, "data", ("train_ann", "val_images"))
    assert job_section(Config(), "model").depth == 18  # a dataclass built in code
    with pytest.raises(ConfigError, match="no section 'nothing'"):
        job_section(cfg, "nothing")
