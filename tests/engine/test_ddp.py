"""Two gloo processes on CPU: the distributed path gives the single-process answer."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from drcl.config import load_config
from drcl.engine.distributed import DistInfo, set_local_env
from drcl.pretrain.loop import build_pretrain_data

# LCL couples the samples of a batch through its gathered negatives; it is off here so that the
# single-process reference (one pass per half batch) is exact. The gather itself is tested in
# tests/losses/test_contrastive.py::test_gather_distributed_uses_all_ranks_keys.
NO_LCL = ["pretrain.lcl.weight=0.0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grad_worker(rank, world, port, overrides, batch, out_dir):
    import torch.distributed as dist

    from drcl.engine.distributed import init_from_env
    from drcl.pretrain.runner import build_drcl_model

    torch.set_num_threads(1)
    set_local_env(rank, world, port)
    init_from_env(torch.device("cpu"))
    torch.manual_seed(0)
    model = build_drcl_model(load_config(None, overrides))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    half = dataclasses.replace(
        batch, **{k: v.chunk(world)[rank] for k, v in batch.tensors().items()}
    )
    losses = ddp(half)
    losses["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.save({"loss": losses["loss"].detach(), "grads": grads}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_gradients_equal_single_process_mean(tiny_overrides, tmp_path):
    from drcl.pretrain.runner import build_drcl_model

    overrides = [*tiny_overrides, *NO_LCL]
    cfg = load_config(None, overrides)
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path, DistInfo())
    batch = next(data.batches())
    mp.spawn(_grad_worker, args=(2, _free_port(), overrides, batch, str(tmp_path)), nprocs=2)

    torch.manual_seed(0)
    ref = build_drcl_model(cfg)
    ref_losses, ref_grads = [], {}
    for half in range(2):
        ref.zero_grad()
        part = {k: v.chunk(2)[half] for k, v in batch.tensors().items()}
        loss = ref(dataclasses.replace(batch, **part))["loss"]
        loss.backward()
        ref_losses.append(loss.detach())
        for n, p in ref.named_parameters():
            if p.grad is not None:
                ref_grads[n] = ref_grads.get(n, 0) + p.grad / 2
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], ref_losses[rank], rtol=1e-5, atol=1e-6)
        assert set(got["grads"]) == set(ref_grads)
        for n, g in got["grads"].items():
            torch.testing.assert_close(g, ref_grads[n], rtol=1e-4, atol=1e-6, msg=n)


def _run_worker(rank, world, port, pre_over, ft_over, work_dir):
    from drcl.finetune.job import FinetuneJob
    from drcl.finetune.runner import run_finetune
    from drcl.pretrain.job import PretrainJob
    from drcl.pretrain.runner import run_pretrain

    torch.set_num_threads(1)
    set_local_env(rank, world, port)
    run_pretrain(PretrainJob.from_config(load_config(None, pre_over), f"{work_dir}/pre"))
    init = f"{work_dir}/pre/pretrained.safetensors"
    run_finetune(FinetuneJob.from_config(load_config(None, ft_over), f"{work_dir}/ft", init=init))
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # fast: test_ddp_gradients_equal_single_process_mean (2 processes, 1 step)
@pytest.mark.parametrize("world", [2])
def test_two_process_pretrain_and_finetune_with_merged_evaluation(tiny_overrides, tmp_path, world):
    common = [*tiny_overrides, "train.max_iters=2", "train.checkpoint_every=2"]
    ft = [
        *common,
        "model.norm=frozen_bn",
        "finetune.rpn_batch_size_per_image=32",
        "finetune.box_batch_size_per_image=32",
        "finetune.eval_batch_size=8",
    ]
    mp.spawn(_run_worker, args=(world, _free_port(), common, ft, str(tmp_path)), nprocs=world)
    pre, ft_dir = tmp_path / "pre", tmp_path / "ft"
    assert (pre / "pretrained.safetensors").is_file()
    assert [json.loads(x)["iter"] for x in (pre / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
    ]
    ev = ft_dir / "eval"
    assert not list(ev.glob("detections_rank*.json"))  # per-rank parts merged, then removed
    dets = json.loads((ev / "detections_bbox.json").read_text())
    val = json.loads(open(load_config(None, tiny_overrides).data.val_ann).read())
    assert {d["image_id"] for d in dets} <= {im["id"] for im in val["images"]}
    metrics = json.loads((ev / "metrics_bbox.json").read_text())
    assert {"AP", "APr", "APc", "APf"} <= set(metrics)
