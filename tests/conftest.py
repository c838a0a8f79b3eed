"""Shared test setup: import the project from the repo root, and run Triton kernels in the
interpreter when no GPU is present (TRITON_INTERPRET must be set before `kernels` is imported)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
