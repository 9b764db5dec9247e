"""Weights I/O: every container read_state_dict unwraps, load_into's report, errors naming files."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from drcl.utils.weights import LoadReport, load_into, read_state_dict, save_state_dict


class Tiny(nn.Module):
    """conv (weight, bias) + BatchNorm (with num_batches_tracked)."""

    def __init__(self, out: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(2, out, 1)
        self.bn = nn.BatchNorm2d(out)


def tiny_state(seed=0, out=3):
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in Tiny(out).state_dict().items()}


class Payload:  # a pickled object that weights_only loading must refuse
    def __reduce__(self):
        return (print, ("unpickled!",))


CONTAINERS = {
    "plain": lambda s: s,
    "trainer": lambda s: {"model": s, "optimizer": {}, "iteration": 3},
    "mmdet": lambda s: {"state_dict": s, "meta": {"x": 1}},
    "nested": lambda s: {"model": {"state_dict": s}},
    "module": lambda s: {"module": s},
    "ddp": lambda s: {f"module.{k}": v for k, v in s.items()},
    "ddp_in_trainer": lambda s: {"model": {f"module.{k}": v for k, v in s.items()}},
}


@pytest.mark.parametrize("name", sorted(CONTAINERS))
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt"])
def test_every_torch_container_unwraps_to_the_same_tensors(tmp_path, name, suffix):
    state = tiny_state()
    torch.save(CONTAINERS[name](state), tmp_path / f"w{suffix}")
    got = read_state_dict(tmp_path / f"w{suffix}")
    assert list(got) == list(state)
    assert all(torch.equal(got[k], state[k]) for k in state)


@pytest.mark.parametrize("filename", ["w.safetensors", "w.bin"])
def test_safetensors_is_read_whatever_the_suffix(tmp_path, filename):
    state = tiny_state()
    save_file(state, str(tmp_path / filename))
    got = read_state_dict(tmp_path / filename)
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_a_key_only_partly_prefixed_module_is_kept_as_is(tmp_path):
    state = {"module.a": torch.zeros(1), "b": torch.ones(1)}
    torch.save(state, tmp_path / "mixed.pth")
    assert list(read_state_dict(tmp_path / "mixed.pth")) == ["module.a", "b"]


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.weights: file not found: .*nope.pth"):
        read_state_dict(tmp_path / "nope.pth", role="model.weights")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a readable safetensors or torch"):
        read_state_dict(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable safetensors file"):
        read_state_dict(tmp_path / "junk.safetensors")
    torch.save({"model": tiny_state(), "x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="evil.pth: not a readable"):
        read_state_dict(tmp_path / "evil.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth: expected a state dict, got list"):
        read_state_dict(tmp_path / "list.pth")
    torch.save({"a": torch.zeros(1), "step": 3}, tmp_path / "mixed.pth")
    with pytest.raises(ValueError, match="mixed.pth: .* but 'step' is a int"):
        read_state_dict(tmp_path / "mixed.pth")


def test_empty_state_dict_reads_as_empty(tmp_path):
    torch.save({}, tmp_path / "empty.pth")
    assert read_state_dict(tmp_path / "empty.pth") == {}


def test_load_into_partial_reports_loaded_missing_unexpected():
    model, source = Tiny(), tiny_state(seed=1)
    state = {k: v for k, v in source.items() if not k.startswith("bn.")}
    state["head.weight"] = torch.ones(2)
    report = load_into(model, state, strict=False, source="pre.pth")
    assert report == LoadReport(
        "pre.pth",
        loaded=["conv.weight", "conv.bias"],
        missing=["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
        unexpected=["head.weight"],
    )
    assert torch.equal(model.conv.weight, source["conv.weight"])
    table = report.table()
    assert "weights: pre.pth" in table and "unexpected (ignored): head.weight" in table
    assert f"{'total':<28} {2:>7} {4:>7} {1:>7}" in table


def test_load_into_strict_full_state_loads_everything():
    model, source = Tiny(), tiny_state(seed=1)
    report = load_into(model, source, strict=True)
    assert report.missing == [] and report.unexpected == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.items())


def test_load_into_errors_leave_the_model_untouched():
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrong = tiny_state(seed=1, out=4)
    wrong["conv.bias"] = before["conv.bias"] + 1  # a matching key that must not load either
    with pytest.raises(
        ValueError,
        match=r"w.pth: key 'conv.weight' has shape \(4, 2, 1, 1\) in the file but "
        r"\(3, 2, 1, 1\) in the model \(wrong depth\?\); 4 more key\(s\) differ",
    ):
        load_into(model, wrong, strict=False, source="w.pth", hint="wrong depth?")
    partial = {"conv.weight": torch.ones(3, 2, 1, 1), "extra": torch.zeros(1)}
    with pytest.raises(
        ValueError,
        match=r"c.pth: does not match the model: missing conv.bias, bn.weight.*; "
        r"unexpected extra",
    ):
        load_into(model, partial, strict=True, source="c.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_num_batches_tracked_is_neither_missing_nor_unexpected():
    model = Tiny()
    state = {k: v for k, v in tiny_state().items() if not k.endswith("num_batches_tracked")}
    assert load_into(model, state, strict=True).missing == []
    frozen = nn.Module()  # FrozenBatchNorm2d has no counter: a BatchNorm file still loads
    frozen.conv = nn.Conv2d(2, 3, 1)
    report = load_into(
        frozen,
        {k: v for k, v in tiny_state().items() if "bn" not in k}
        | {"conv.num_batches_tracked": torch.tensor(5)},
        strict=True,
    )
    assert report.unexpected == [] and report.loaded == ["conv.weight", "conv.bias"]


def test_save_state_dict_round_trips_with_metadata(tmp_path):
    from safetensors import safe_open

    state = tiny_state()
    state["t"] = torch.arange(6.0).reshape(2, 3).t()  # not contiguous: written all the same
    state["g"] = torch.ones(2, requires_grad=True)  # detached on the way
    out = save_state_dict(state, tmp_path / "sub" / "w.safetensors", {"format": "pt"})
    assert out == tmp_path / "sub" / "w.safetensors"
    back = read_state_dict(out)
    assert set(back) == set(state)
    for k, v in state.items():
        assert torch.equal(back[k], v.detach()), k
    with safe_open(str(out), "pt") as fh:
        assert fh.metadata() == {"format": "pt"}
    assert [p.name for p in out.parent.iterdir()] == ["w.safetensors"]  # no tmp file left


def test_save_state_dict_failure_leaves_nothing(tmp_path):
    shared = torch.zeros(4)
    with pytest.raises(RuntimeError):  # safetensors refuses tensors sharing memory
        save_state_dict({"a": shared, "b": shared}, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []
