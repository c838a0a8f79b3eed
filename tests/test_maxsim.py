"""Tests of kernels.maxsim: S[i, m] = max_p <audio_i, visual_m[:, p]> and its gradients.

The "reference" backend (einsum + max in float32) is the truth. Without a GPU the Triton kernels run in the
Triton interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1), so the shapes here stay small.

Tolerances, and why:
* "grid" inputs: every entry is k/8 (or k/64), so every product and every partial sum is exactly representable in
  fp32 (and the inputs themselves in bf16, fp16 and tf32). S is then bit-identical in every backend and dtype, ties
  are exact (and frequent), and the argmax must agree exactly (first index). Gradients are sums of g * x over
  several samples in different orders: fp32 rtol 1e-5 / atol 1e-6 (a few ulp); 16-bit grads are rounded from those
  fp32 sums, so they may differ by one ulp: torch.testing defaults for the dtype (bf16 rtol 1.6e-2, fp16 1e-3).
* "normal" inputs (L2-normalised Gaussians, the real use): Triton runs tl.dot with input_precision="ieee" here
  (fixture `ieee`), so the only difference with PyTorch's fp32 matmul is summation order: |S| <= 1 and D <= 64
  bound the error by ~D * 2^-24 per implementation, hence atol 1e-5 on S. Near-ties may then legitimately flip the
  argmax, so gradients are compared with the analytic gradient (float64) evaluated at the backend's OWN argmax,
  and that argmax is checked to be a true maximum within the same 1e-5.
* GPU, default tf32 for fp32 inputs: products use ~11-bit mantissas, |error| <= ~2^-10 * sum_d |a_d v_d| <= 1e-3;
  atol 2e-3 on S (CUDA-only test).
"""
import importlib
import zlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kernels import maxsim

ms = importlib.import_module("kernels.maxsim")  # the module (`kernels.maxsim` the attribute is the function)

HAS_CUDA = torch.cuda.is_available()
DEV = torch.device("cuda" if HAS_CUDA else "cpu")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

# Small tiles force several P tiles and D chunks (with masked edges) even on the small interpreter shapes.
SMALL_BLOCKS = {"block_a": 16, "block_p": 16, "block_d": 16}
# (backend, module settings to patch): the Triton tiles, and both backward forms of the torch backend
# (one-hot batched matmul for small P, gather/scatter for large P; the small test shapes would otherwise only
# ever take the first).
BACKEND_CONFIGS = [
    ("triton", {}),
    ("triton", {"TRITON_BLOCKS": SMALL_BLOCKS}),
    ("torch", {"TORCH_DENSE_BWD_MAX_P": 10**9}),
    ("torch", {"TORCH_DENSE_BWD_MAX_P": 0}),
]
BACKEND_IDS = ["triton-default-blocks", "triton-small-blocks", "torch-dense-bwd", "torch-gather-bwd"]

# (Na, Nv, D, spatial) -- visual is (Nv, D, *spatial): (H, W) or (P,)
SHAPES = [
    (4, 4, 32, (7, 7)),  # P = 49, 4-D visual, D a multiple of 16
    (3, 5, 20, (50,)),  # P = 50, 3-D visual, D = 20, Na < Nv
    (7, 2, 33, (1, 1)),  # P = 1, D = 33, Na > Nv
    (1, 1, 16, (49,)),  # a batch of 1
    (5, 3, 33, (5, 10)),  # P = 50 as 5 x 10
    (8, 8, 64, (8, 8)),  # the largest interpreter shape
]


def _seed(*params):
    return zlib.crc32(repr(params).encode())


def _grid_inputs(Na, Nv, D, spatial, dtype=torch.float32, seed=0):
    """Entries k/8, |k| <= 4: all dot products exact in fp32; inputs exact in fp32/tf32/bf16/fp16."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(-4, 5, (Na, D), generator=gen).to(torch.float32) / 8
    v = torch.randint(-4, 5, (Nv, D, *spatial), generator=gen).to(torch.float32) / 8
    g = torch.randn(Na, Nv, generator=gen)
    return a.to(DEV, dtype), v.to(DEV, dtype), g.to(DEV)


def _normal_inputs(Na, Nv, D, spatial, dtype=torch.float32, seed=0):
    """L2-normalised Gaussian features (what the model feeds the op)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(Na, D, generator=gen), dim=1)
    v = torch.nn.functional.normalize(torch.randn(Nv, D, *spatial, generator=gen), dim=1)
    g = torch.randn(Na, Nv, generator=gen)
    return a.to(DEV, dtype), v.to(DEV, dtype), g.to(DEV)


def _run(backend, a, v, g):
    """S and (grad_audio, grad_visual) of <g, S> for leaf copies of a and v."""
    a = a.detach().clone().requires_grad_()
    v = v.detach().clone().requires_grad_()
    S = maxsim(a, v, backend=backend)
    ga, gv = torch.autograd.grad(S, (a, v), g)
    return S.detach(), ga, gv


def _ref_argmax(a, v):
    Nv, D = v.shape[:2]
    sim = torch.einsum("id,mdp->imp", a.double(), v.reshape(Nv, D, -1).double())
    return sim, sim.max(dim=-1).indices


def _backend_argmax(backend, a, v):
    v3 = v.reshape(v.shape[0], v.shape[1], -1)
    if backend == "triton":
        return ms._triton_forward(a, v3)[1].long()
    return ms._torch_forward(a, v3)[1]


def _analytic_grads(a, v, g, idx):
    """Gradients of sum(g * S) in float64 when the max of (i, m) sits at position idx[i, m]."""
    Nv, D = v.shape[:2]
    v3 = v.reshape(Nv, D, -1).double()
    P = v3.shape[2]
    cols = v3[torch.arange(Nv, device=v.device)[None, :], :, idx]
    ga = torch.einsum("im,imd->id", g.double(), cols)
    contrib = g.double()[:, :, None] * a.double()[:, None, :]  # (Na, Nv, D)
    flat = (torch.arange(Nv, device=v.device)[None, :] * P + idx).reshape(-1)  # row of (Nv * P, D)
    gv = torch.zeros(Nv * P, D, dtype=torch.float64, device=v.device)
    gv.index_add_(0, flat, contrib.reshape(-1, D))
    return ga, gv.reshape(Nv, P, D).transpose(1, 2).reshape(v.shape)


def _patch(monkeypatch, settings):
    for name, value in settings.items():
        monkeypatch.setattr(ms, name, value)


@pytest.fixture(autouse=True)
def ieee(monkeypatch):
    """Exact fp32 products in tl.dot for every test (the CUDA tf32 test overrides it)."""
    monkeypatch.setattr(ms, "FP32_INPUT_PRECISION", "ieee")
    monkeypatch.setattr(ms, "TRITON_BLOCKS", None)
    monkeypatch.setattr(ms, "TORCH_DENSE_BWD_MAX_P", ms.TORCH_DENSE_BWD_MAX_P)  # restored after each test


# ------------------------------------------------------------------------------------------------ values + gradients
@pytest.mark.parametrize("backend,settings", BACKEND_CONFIGS, ids=BACKEND_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, (s[0], s[1], s[2], *s[3]))))
def test_exact_grid_inputs(shape, backend, settings, monkeypatch):
    _patch(monkeypatch, settings)
    a, v, g = _grid_inputs(*shape, seed=_seed(shape, "grid"))
    S_ref, ga_ref, gv_ref = _run("reference", a, v, g)
    S, ga, gv = _run(backend, a, v, g)
    assert S.dtype == torch.float32 and S.shape == (shape[0], shape[1])
    assert torch.equal(S, S_ref)
    assert torch.equal(_backend_argmax(backend, a, v), _ref_argmax(a, v)[1])
    torch.testing.assert_close(ga, ga_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gv, gv_ref, rtol=1e-5, atol=1e-6)
    assert gv.shape == v.shape


@pytest.mark.parametrize("backend,settings", BACKEND_CONFIGS, ids=BACKEND_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, (s[0], s[1], s[2], *s[3]))))
def test_normal_inputs(shape, backend, settings, monkeypatch):
    _patch(monkeypatch, settings)
    a, v, g = _normal_inputs(*shape, seed=_seed(shape, "normal"))
    S_ref = _run("reference", a, v, g)[0]
    S, ga, gv = _run(backend, a, v, g)
    torch.testing.assert_close(S, S_ref, rtol=0, atol=1e-5)

    sim64, _ = _ref_argmax(a, v)
    idx = _backend_argmax(backend, a, v)
    at_idx = sim64.gather(2, idx[..., None]).squeeze(2)
    assert (at_idx >= sim64.max(dim=-1).values - 1e-5).all(), "backend argmax is not a maximum"
    torch.testing.assert_close(S.double(), at_idx, rtol=0, atol=1e-5)
    ga_exp, gv_exp = _analytic_grads(a, v, g, idx)
    torch.testing.assert_close(ga, ga_exp.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gv, gv_exp.float(), rtol=1e-5, atol=1e-6)


def test_reference_matches_definition():
    """The truth itself: reference == float64 einsum + max, gradient at the first argmax."""
    a, v, g = _normal_inputs(3, 4, 24, (6, 6), seed=_seed("ref"))
    S, ga, gv = _run("reference", a, v, g)
    sim64, idx = _ref_argmax(a, v)
    torch.testing.assert_close(S.double(), sim64.max(-1).values, rtol=0, atol=1e-6)
    ga_exp, gv_exp = _analytic_grads(a, v, g, idx)
    torch.testing.assert_close(ga, ga_exp.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gv, gv_exp.float(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------- ties
@pytest.mark.parametrize("p1,p2", [(3, 7), (5, 40), (0, 49), (16, 17)])
@pytest.mark.parametrize("backend,settings", BACKEND_CONFIGS + [("reference", {})], ids=BACKEND_IDS + ["reference"])
def test_planted_ties_first_index_wins(backend, p1, p2, settings, monkeypatch):
    """v_m[:, p1] == v_m[:, p2] == a_{m % Na}, all other columns tiny: row m % Na ties exactly between p1 < p2.
    The first must win, and since column p2 always ties with p1, no gradient may ever reach p2.
    With 16-wide tiles, (3, 7) tie inside a tile, (5, 40) / (0, 49) across tiles, (16, 17) at a tile start."""
    _patch(monkeypatch, settings)
    Na, Nv, D, P = 3, 5, 20, 50
    gen = torch.Generator().manual_seed(_seed("ties", p1, p2))
    sign = torch.randint(0, 2, (Na, D), generator=gen) * 2 - 1
    a = sign * torch.randint(1, 5, (Na, D), generator=gen) / 8  # |a_d| >= 1/8: |a|^2 >= D/64
    v = torch.randint(-2, 3, (Nv, D, P), generator=gen) / 64  # |<a, w>| <= D/256 < |a|^2
    rows = torch.arange(Nv) % Na
    v[:, :, p1] = a[rows]
    v[:, :, p2] = a[rows]
    g = torch.randn(Na, Nv, generator=gen)
    a, v, g = a.to(DEV), v.to(DEV), g.to(DEV)

    S, ga, gv = _run(backend, a, v, g)
    S_ref, ga_ref, gv_ref = _run("reference", a, v, g)
    assert torch.equal(S, S_ref)
    if backend != "reference":
        idx = _backend_argmax(backend, a, v)
        assert (idx[rows, torch.arange(Nv)] == p1).all()
        assert (idx != p2).all()
    assert torch.equal(gv[:, :, p2], torch.zeros_like(gv[:, :, p2]))
    assert (gv[:, :, p1].abs().sum(dim=1) > 0).all()  # every sample's planted column got its rows' gradient
    torch.testing.assert_close(ga, ga_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gv, gv_ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ non-contiguous
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("layout", ["channels-last", "sliced", "transposed-3d"])
def test_non_contiguous_views(backend, layout):
    """Gradients flow back through the views to the underlying leaves, as for the reference."""
    Na, Nv, D, H, W = 5, 3, 24, 6, 7
    gen = torch.Generator().manual_seed(_seed("views", layout))
    a_base = (torch.randint(-4, 5, (D, 2 * Na), generator=gen) / 8).to(DEV)
    if layout == "channels-last":
        v_base = (torch.randint(-4, 5, (Nv, H, W, D), generator=gen) / 8).to(DEV)
        make_v = lambda t: t.permute(0, 3, 1, 2)  # (Nv, D, H, W) with stride 1 along D
    elif layout == "sliced":
        v_base = (torch.randint(-4, 5, (2 * Nv, D + 3, H, W), generator=gen) / 8).to(DEV)
        make_v = lambda t: t[::2, 1:D + 1]  # every other sample, a window of channels
    else:
        v_base = (torch.randint(-4, 5, (Nv, H * W, D), generator=gen) / 8).to(DEV)
        make_v = lambda t: t.transpose(1, 2)  # (Nv, D, P)
    make_a = lambda t: t.t()[::2]  # (Na, D), transposed and strided
    g = torch.randn(Na, Nv, generator=gen).to(DEV)

    out = {}
    for b in (backend, "reference"):
        a_leaf = a_base.clone().requires_grad_()
        v_leaf = v_base.clone().requires_grad_()
        audio, visual = make_a(a_leaf), make_v(v_leaf)
        assert not audio.is_contiguous() and not visual.is_contiguous()
        S = maxsim(audio, visual, backend=b)
        out[b] = (S.detach(), *torch.autograd.grad(S, (a_leaf, v_leaf), g))
    S, ga, gv = out[backend]
    S_ref, ga_ref, gv_ref = out["reference"]
    assert torch.equal(S, S_ref)
    torch.testing.assert_close(ga, ga_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gv, gv_ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- 16-bit inputs
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("shape", [(3, 5, 33, (50,)), (4, 4, 32, (7, 7))], ids=["3x5x33x50", "4x4x32x7x7"])
def test_low_precision_grid(shape, backend, dtype):
    a, v, g = _grid_inputs(*shape, dtype=dtype, seed=_seed(shape, dtype, "grid16"))
    S_ref, ga_ref, gv_ref = _run("reference", a, v, g)
    S, ga, gv = _run(backend, a, v, g)
    assert S.dtype == torch.float32 and ga.dtype == dtype and gv.dtype == dtype
    assert torch.equal(S, S_ref)  # exact inputs, exact fp32 accumulation
    assert torch.equal(_backend_argmax(backend, a, v), _ref_argmax(a, v)[1])
    torch.testing.assert_close(ga, ga_ref)  # dtype defaults: one rounding step of the same fp32 sum
    torch.testing.assert_close(gv, gv_ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_low_precision_normal(backend, dtype):
    shape = (6, 4, 48, (7, 7))
    a, v, g = _normal_inputs(*shape, dtype=dtype, seed=_seed(shape, dtype, "normal16"))
    S_ref = _run("reference", a, v, g)[0]
    S, ga, gv = _run(backend, a, v, g)
    # 16-bit inputs, exact products, fp32 sums in different orders.
    torch.testing.assert_close(S, S_ref, rtol=0, atol=1e-5)
    idx = _backend_argmax(backend, a, v)
    sim64, _ = _ref_argmax(a, v)
    assert (sim64.gather(2, idx[..., None]).squeeze(2) >= sim64.max(-1).values - 1e-5).all()
    ga_exp, gv_exp = _analytic_grads(a, v, g, idx)
    torch.testing.assert_close(ga, ga_exp.to(dtype))
    torch.testing.assert_close(gv, gv_exp.to(dtype))


# ------------------------------------------------------------------------------------------- partial gradients
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("which", ["audio", "visual"])
def test_gradient_of_one_input_only(backend, which):
    a, v, g = _grid_inputs(3, 4, 20, (5, 5), seed=_seed("one", which))
    leaf = a if which == "audio" else v
    leaf = leaf.clone().requires_grad_()
    args = (leaf, v) if which == "audio" else (a, leaf)
    (grad,) = torch.autograd.grad(maxsim(*args, backend=backend), (leaf,), g)
    _, ga_ref, gv_ref = _run("reference", a, v, g)
    torch.testing.assert_close(grad, ga_ref if which == "audio" else gv_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_expanded_upstream_gradient(backend):
    """S.sum().backward() hands the op a stride-0 gradient."""
    a, v, _ = _grid_inputs(4, 3, 20, (6, 5), seed=_seed("sum"))
    grads = {}
    for b in (backend, "reference"):
        al, vl = a.clone().requires_grad_(), v.clone().requires_grad_()
        maxsim(al, vl, backend=b).sum().backward()
        grads[b] = (al.grad, vl.grad)
    for x, y in zip(grads[backend], grads["reference"]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- torch backend memory
class _AllocationRecorder(TorchDispatchMode):
    """Records the storage size of every tensor an ATen op returns, except views of the given inputs.
    (Views of intermediates are recorded again with their base's size, which is harmless for a maximum.)"""

    def __init__(self, inputs):
        super().__init__()
        self.inputs = {t.untyped_storage().data_ptr() for t in inputs}
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.inputs:
                self.sizes.append(t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("dense_max_p", [10**9, 0], ids=["dense-bwd", "gather-bwd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_torch_backend_stays_within_its_block_budget(dtype, dense_max_p, monkeypatch):
    """With a tiny budget (forcing chunks over Nv, and over audio rows in the forward), no tensor the torch backend
    creates exceeds the budget, except its outputs (S, the gradients and their fp32 accumulators); the reference,
    as a control, does create the full (Na, Nv, P) similarity tensor in both passes."""
    budget = 256  # elements; Na * P = 400 > budget forces row blocks too
    monkeypatch.setitem(ms.TORCH_BLOCK_ELEMENTS, DEV.type, budget)
    monkeypatch.setattr(ms, "TORCH_DENSE_BWD_MAX_P", dense_max_p)
    Na, Nv, D, P = 8, 6, 4, 50
    a, v, g = _grid_inputs(Na, Nv, D, (P,), dtype=dtype, seed=_seed("budget", dtype))
    elem = a.element_size()
    full = Na * Nv * P * 4
    # per-block limit: budget fp32 elements; 16-bit inputs add an fp32 copy of one visual sample (D * P)
    limit = 4 * max(budget, D * P if dtype != torch.float32 else 0)
    outputs = {Na * Nv * 4, Nv * D * P * 4, Nv * D * P * elem, Na * D * 4, Na * D * elem}
    for backend in ("torch", "reference"):
        al, vl = a.clone().requires_grad_(), v.clone().requires_grad_()
        with _AllocationRecorder([al, vl, g]) as fwd:
            S = maxsim(al, vl, backend=backend)
        with _AllocationRecorder([al, vl, g, S]) as bwd:
            torch.autograd.grad(S, (al, vl), g)
        if backend == "torch":
            too_big = [n for n in fwd.sizes + bwd.sizes if n > limit and n not in outputs]
            assert not too_big, (too_big, limit)
        else:
            assert max(fwd.sizes) >= full and max(bwd.sizes) >= full
    # and the many-chunk result is still exact
    S_ref, ga_ref, gv_ref = _run("reference", a, v, g)
    S_t, ga_t, gv_t = _run("torch", a, v, g)
    assert torch.equal(S_t, S_ref)
    torch.testing.assert_close(ga_t, ga_ref)
    torch.testing.assert_close(gv_t, gv_ref)


def test_torch_backend_saves_only_argmax():
    """The autograd graph keeps the inputs plus an (Na, Nv) index tensor, nothing of size P."""
    a, v, _ = _grid_inputs(4, 3, 16, (7, 7), seed=_seed("saved"))
    al, vl = a.clone().requires_grad_(), v.clone().requires_grad_()
    S = maxsim(al, vl, backend="torch")
    saved = S.grad_fn.saved_tensors
    extra = [t for t in saved if t.untyped_storage().data_ptr() not in
             (al.untyped_storage().data_ptr(), vl.untyped_storage().data_ptr())]
    assert [tuple(t.shape) for t in extra] == [(4, 3)]
    assert extra[0].dtype in (torch.int32, torch.int64)


# --------------------------------------------------------------------------------------------- backend selection
def test_auto_backend_resolution():
    a, v, _ = _grid_inputs(3, 2, 16, (4, 4), seed=_seed("auto"))
    assert ms._resolve_backend("auto", a) == ("triton" if a.is_cuda else "torch")
    assert ms._resolve_backend("auto", a.cpu()) == "torch"
    assert torch.equal(maxsim(a, v), maxsim(a, v, backend=ms._resolve_backend("auto", a)))


# ------------------------------------------------------------------------------------------------------- errors
_A = torch.zeros(3, 8)
_V = torch.zeros(2, 8, 4, 4)
ERROR_CASES = {
    "audio-1d": ((torch.zeros(8), _V, "auto"), r"audio of shape \(Na, D\).*1-D"),
    "audio-3d": ((torch.zeros(1, 3, 8), _V, "auto"), r"audio of shape \(Na, D\).*3-D"),
    "visual-2d": ((_A, torch.zeros(2, 8), "auto"), r"visual of shape \(Nv, D, H, W\) or \(Nv, D, P\).*2-D"),
    "visual-5d": ((_A, torch.zeros(2, 8, 1, 4, 4), "auto"), r"visual of shape.*5-D"),
    "d-mismatch": ((_A, torch.zeros(2, 9, 4, 4), "auto"), r"D=8.*D=9"),
    "dtype-mismatch": ((_A, _V.bfloat16(), "auto"), r"same dtype, got torch.float32 and torch.bfloat16"),
    "float64": ((_A.double(), _V.double(), "auto"), r"float32, bfloat16 or float16.*torch.float64"),
    "integer": ((_A.long(), _V.long(), "torch"), r"float32, bfloat16 or float16.*torch.int64"),
    "device-mismatch": ((_A, _V.to("meta"), "torch"), r"same device, got cpu and meta"),
    "empty": ((torch.zeros(0, 8), _V, "torch"), r"non-empty"),
    "not-a-tensor": ((_A.tolist(), _V, "torch"), r"torch.Tensor, got list"),
    "unknown-backend": ((_A, _V, "cuda"), r"unknown backend 'cuda'; expected one of"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_value_errors(case):
    args, pattern = ERROR_CASES[case]
    with pytest.raises(ValueError, match=pattern):
        maxsim(*args[:2], backend=args[2])


def test_triton_on_cpu_without_interpreter_names_the_fix(monkeypatch):
    monkeypatch.setattr(ms, "_INTERPRET", False)
    with pytest.raises(ValueError, match=r"CUDA.*TRITON_INTERPRET=1 before importing"):
        maxsim(_A, _V, backend="triton")
    # auto silently uses torch on CPU
    assert maxsim(_A, _V).shape == (3, 2)


# --------------------------------------------------------------------------------------------------- CUDA only
@needs_cuda
def test_cuda_triton_default_precision_fp32(monkeypatch):
    """Default tf32 tl.dot for fp32 inputs: values within the tf32 bound, gradients exact at the kernel's argmax."""
    monkeypatch.setattr(ms, "FP32_INPUT_PRECISION", "tf32")
    shape = (32, 48, 128, (14, 14))
    a, v, g = _normal_inputs(*shape, seed=_seed(shape, "tf32"))
    S_ref = _run("reference", a, v, g)[0]
    S, ga, gv = _run("triton", a, v, g)
    torch.testing.assert_close(S, S_ref, rtol=0, atol=2e-3)
    idx = _backend_argmax("triton", a, v)
    sim64, _ = _ref_argmax(a, v)
    assert (sim64.gather(2, idx[..., None]).squeeze(2) >= sim64.max(-1).values - 2e-3).all()
    ga_exp, gv_exp = _analytic_grads(a, v, g, idx)
    torch.testing.assert_close(ga, ga_exp.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gv, gv_exp.float(), rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("spatial", [(56, 56), (7, 7)], ids=["56x56", "7x7"])
def test_cuda_triton_bf16_bench_shape(spatial):
    """The paper's setting in bf16: 64 audio x 64 visual, D = 512."""
    shape = (64, 64, 512, spatial)
    a, v, g = _normal_inputs(*shape, dtype=torch.bfloat16, seed=_seed(shape, "bf16-bench"))
    S_ref = _run("reference", a, v, g)[0]
    S, ga, gv = _run("triton", a, v, g)
    torch.testing.assert_close(S, S_ref, rtol=0, atol=1e-4)  # exact products, fp32 sums over D = 512
    idx = _backend_argmax("triton", a, v)
    sim64, _ = _ref_argmax(a, v)
    assert (sim64.gather(2, idx[..., None]).squeeze(2) >= sim64.max(-1).values - 1e-4).all()
    ga_exp, gv_exp = _analytic_grads(a, v, g, idx)
    torch.testing.assert_close(ga, ga_exp.to(torch.bfloat16))
    torch.testing.assert_close(gv, gv_exp.to(torch.bfloat16))


@needs_cuda
def test_cuda_fp32_ieee_large_d_matches_torch_backend():
    """Several D chunks (D = 512) and P tiles on the GPU, ieee precision: triton and torch agree on grid inputs."""
    shape = (40, 24, 512, (28, 28))
    a, v, g = _grid_inputs(*shape, seed=_seed(shape, "cuda-grid"))
    S_t, ga_t, gv_t = _run("triton", a, v, g)
    S_c, ga_c, gv_c = _run("torch", a, v, g)
    assert torch.equal(S_t, S_c)
    torch.testing.assert_close(ga_t, ga_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gv_t, gv_c, rtol=1e-5, atol=1e-5)
