"""CUDA paths: AMP, SyncBN under NCCL, deterministic resume, the data loader feeding the GPU.

Every test here but the last is marked ``cuda`` and skipped without a CUDA device;
``pytest -m cuda`` (run by ``bench/gpu_check.sh``) selects them. Tolerances, and why:

- AMP vs fp32 (same weights, same batch): each loss within ``rtol`` of fp32 plus ``atol``
  (bf16: 5e-2 / 1e-2, as bf16 keeps 8 mantissa bits, a relative step of 2^-8 = 0.4% per
  rounding, compounded over ~20 layers; fp16: 1e-2 / 5e-3, 11 bits), and the cosine between the
  flattened AMP and fp32 gradients >= 0.95 (bf16) / 0.99 (fp16).
- ``--resume`` on CUDA: bit-exact when the run itself is (two identical runs give identical
  weights under ``torch.use_deterministic_algorithms`` + ``CUBLAS_WORKSPACE_CONFIG``); when it is
  not (``roi_align`` and ``max_pool2d`` backward accumulate with atomics on CUDA and have no
  deterministic kernel; the engine sets ``warn_only``), the resumed run may differ from the
  uninterrupted one by at most 4x the difference between two uninterrupted runs.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# cuBLAS reads this when its handle is created (first matmul): set before any CUDA work.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from drcl.config import load_config  # noqa: E402
from drcl.engine import distributed as dist  # noqa: E402
from drcl.pretrain.loop import build_pretrain_data
from drcl.pretrain.runner import build_drcl_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_test(fn):
    """Marked ``cuda`` (``pytest -m cuda`` selects it) and skipped without a CUDA device."""
    return pytest.mark.cuda(_needs_cuda(fn))


AMP_TOL = {torch.bfloat16: (5e-2, 1e-2, 0.8), torch.float16: (1e-2, 5e-3, 0.98)}


def _batch(cfg, tmp_path: Path, device: str = "cuda") -> dict[str, torch.Tensor]:
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path, dist.DistInfo())
    return next(data.batches()).to(device)


def _loss_and_grad(model, batch, dtype):
    """Losses (fp32 values) and the flattened gradient of one step, AMP when ``dtype``."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        losses = model(batch)
    scale = 1024.0 if dtype == torch.float16 else 1.0  # a fixed loss scale, as GradScaler's
    (losses["loss"].float() * scale).backward()
    grad = torch.cat([p.grad.flatten() / scale for p in model.parameters() if p.grad is not None])
    return {k: v.float().item() for k, v in losses.items()}, grad


@cuda_test
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_amp_step_is_finite_and_matches_fp32(dtype, tiny_overrides, tmp_path):
    cfg = load_config(None, tiny_overrides)
    batch = _batch(cfg, tmp_path)
    torch.manual_seed(0)
    model = build_drcl_model(cfg).cuda().train()
    amp_model = copy.deepcopy(model)  # same weights and BN state for both
    ref, ref_grad = _loss_and_grad(model, batch, None)
    got, grad = _loss_and_grad(amp_model, batch, dtype)
    rtol, atol, min_cos = AMP_TOL[dtype]
    assert torch.isfinite(grad).all()
    for k, v in ref.items():
        assert abs(got[k] - v) <= rtol * abs(v) + atol, (k, got[k], v)
    cos = torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0).item()
    assert cos >= min_cos, cos


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@cuda_test
def test_sync_bn_under_a_single_process_nccl_group(tiny_overrides, tmp_path):
    from drcl.engine.setup import wrap_ddp

    cfg = load_config(None, [*tiny_overrides, "model.norm=sync_bn"])
    batch = _batch(cfg, tmp_path)
    torch.manual_seed(0)
    ref_model = build_drcl_model(load_config(None, [*tiny_overrides, "model.norm=bn"]))
    torch.manual_seed(0)
    model = build_drcl_model(cfg).cuda()
    ref = ref_model.cuda()(batch)
    old_env = dict(os.environ)
    dist.set_local_env(0, 1, _free_port())
    torch.distributed.init_process_group("nccl", rank=0, world_size=1)
    try:
        wrapped = wrap_ddp(model, torch.device("cuda", 0), sync_bn=True)
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        sync = [m for m in wrapped.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
        plain = [m for m in wrapped.modules() if type(m) is torch.nn.BatchNorm2d]
        assert sync and not plain
        losses = wrapped(batch)
        losses["loss"].backward()  # DDP all-reduce over NCCL, LCL gather over NCCL
        torch.cuda.synchronize()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        # one process: synchronised statistics are the local ones, so the losses are BN's
        for k in ref:
            torch.testing.assert_close(losses[k], ref[k], rtol=1e-4, atol=1e-5)
        mean = dist.all_reduce_mean({"x": 3.0}, torch.device("cuda", 0))
        assert mean == {"x": 3.0}
    finally:
        torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(old_env)


def _pretrain(work: Path, over: list[str], resume: bool = False) -> None:
    cmd = [sys.executable, "-m", "drcl.cli.main", "pretrain", "configs/pretrain/demo.yaml"]
    cmd += ["--work-dir", str(work), *over] + (["--resume"] if resume else [])
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def _max_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(a / "pretrained.safetensors"), load_file(b / "pretrained.safetensors")
    assert x.keys() == y.keys()
    return max((x[k].double() - y[k].double()).abs().max().item() for k in x)


@cuda_test
def test_resume_on_cuda_matches_the_uninterrupted_run(tiny_overrides, tmp_path):
    over = [
        *tiny_overrides,
        "train.device=cuda",
        "train.deterministic=true",
        "train.max_iters=8",
        "train.checkpoint_every=2",
        "train.keep_checkpoints=10",
    ]
    _pretrain(tmp_path / "a", over)
    _pretrain(tmp_path / "a2", over)
    floor = _max_diff(tmp_path / "a", tmp_path / "a2")
    # an interrupted run: the state after iteration 4, then --resume to 8
    resumed = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(tmp_path / "a"), str(resumed)], check=True)
    for p in resumed.iterdir():
        if p.name.startswith(("ckpt_0000006", "ckpt_0000008", "pretrained")):
            p.unlink()
    _pretrain(resumed, over, resume=True)
    diff = _max_diff(tmp_path / "a", resumed)
    print(f"CUDA resume: max |resumed - run| = {diff:.3g}, run-to-run = {floor:.3g}")
    if floor == 0.0:
        assert diff == 0.0  # the run is deterministic, so resume must be bit-exact
    else:
        assert diff <= 4 * floor


@cuda_test
def test_drb_loader_with_8_pinned_workers_keeps_the_gpu_fed(tiny_overrides, tmp_path):
    """R50-FPN bf16 steps at 224 px, batch 8: after warm-up, the loop waits for data < 20%."""
    over = [o for o in tiny_overrides if not o.startswith(("model.", "pretrain.views"))]
    over += ["data.num_workers=8", "train.batch_size=8", "train.device=cuda"]
    over += ["model.depth=50", "model.norm=frozen_bn", "pretrain.views.size=224"]
    cfg = load_config(None, over)
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path, dist.DistInfo())
    assert data.pin_memory
    torch.manual_seed(0)
    model = build_drcl_model(cfg).cuda().train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    wait = busy = 0.0
    batches = data.batches()
    for i in range(9):
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        t1 = time.perf_counter()
        assert batch.view1.is_pinned()
        batch = data.to_device(batch, torch.device("cuda"))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= 2:  # workers start during the first batches
            wait, busy = wait + t1 - t0, busy + time.perf_counter() - t1
    assert busy > 0 and i >= 6, "too few batches in the tiny demo epoch"
    print(f"data wait {wait:.3f} s vs GPU step {busy:.3f} s")
    assert wait / (wait + busy) < 0.2


def test_batches_are_pinned_only_for_cuda_runs(tiny_overrides, tmp_path):
    """Runs everywhere (no GPU needed): a CPU run does not pin (pinning needs CUDA)."""
    cfg = load_config(None, [*tiny_overrides, "train.device=cpu"])
    assert not build_pretrain_data(
        cfg.data, cfg.train, cfg.pretrain, tmp_path, dist.DistInfo()
    ).pin_memory
