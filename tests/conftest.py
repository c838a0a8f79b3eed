"""Shared test setup: import the project from the repo root, run Triton kernels in the interpreter when no
GPU is present (TRITON_INTERPRET must be set before `kernels` is imported), and a tiny AVSBench root."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """An AVSBench root with synthetic S4 and MS3 subsets of 5 videos (3/1/1) at 64 px."""
    from data import synthesize
    root = tmp_path_factory.mktemp("avsbench")
    synthesize(root, "s4", videos=5, seed=1, size=64)
    synthesize(root, "ms3", videos=5, seed=2, size=64)
    return root


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A randomly initialised small WS-AVS saved as train.py saves it: for the paths that do not depend on training
    (your own clips, the localisation benchmarks)."""
    from dataclasses import asdict
    from wsavs import WSAVS, preset_config
    cfg = preset_config("small", dim=16, decoder_dim=8, img_size=64)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.manual_seed(0)
    torch.save({"method": "wsavs", "model": WSAVS(cfg).state_dict(), "config": asdict(cfg), "args": {}, "epoch": 1},
               path)
    return path
