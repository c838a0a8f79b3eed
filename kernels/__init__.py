"""Custom kernels for the WS-AVS reproduction."""
from .maxsim import maxsim

__all__ = ["maxsim"]
