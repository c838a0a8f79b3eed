"""MaxSim between audio vectors and visual feature maps (the core of WS-AVS' multi-scale
multiple-instance contrastive loss).

    S[i, m] = max_p <audio[i, :], visual[m, :, p]>        audio (Na, D), visual (Nv, D, P) or (Nv, D, H, W)

The gradient flows only through the argmax position p* = idx[i, m] (first index on ties):
    dS/daudio[i]         = sum_m g[i, m] * visual[m, :, idx[i, m]]
    dS/dvisual[m, :, p]  = sum_{i : idx[i, m] == p} g[i, m] * audio[i]

Layout of this file (Liger-Kernel / Triton-tutorial style):
  1. Triton kernels (forward, backward)          4. "reference" backend (the plain definition)
  2. autograd.Function for the Triton path       5. the public `maxsim(audio, visual, backend="auto")`
  3. "torch" backend: chunked pure PyTorch, autograd.Function with a hand-written backward

Inputs are expected to be L2-normalised by the caller; this op does not normalise.
Supported dtypes: float32, bfloat16, float16 (both inputs the same); accumulation is float32, S is float32,
gradients come back in the input dtypes.
"""
import contextlib
import os

import torch
import triton
import triton.language as tl

# TRITON_INTERPRET must be set before this module is imported (triton.jit reads it at decoration time).
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# Precision of tl.dot for float32 inputs. Default "tf32": on Ampere/Hopper this runs fp32 MaxSim on the tensor
# cores (~10-bit mantissa products, fp32 accumulation), the usual speed/accuracy trade-off for a similarity logit;
# set it to "ieee" for exact fp32 products (the tests do, so they can compare with PyTorch's fp32 matmul).
# bf16/fp16 inputs are unaffected (their products are exact in fp32 either way). The interpreter always uses ieee.
FP32_INPUT_PRECISION = "tf32"

# Optional override of the Triton tile sizes, e.g. {"block_a": 16, "block_p": 16, "block_d": 16} (tests use it to
# force several P tiles and D chunks on small inputs). None = the heuristic in `_triton_fwd_config`.
TRITON_BLOCKS = None

# Element budget of one block of the similarity tensor in the "torch" backend (per device type).
# 2**20 fp32 = 4 MiB on CPU (cache-friendly, and ~1/12 of the full tensor at Na = Nv = 64, P = 56*56);
# GPUs want bigger matmuls to be efficient: 2**24 fp32 = 64 MiB.
TORCH_BLOCK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 24}
# "torch" backward: up to this many positions P, a one-hot batched matmul beats gather/scatter (see _torch_backward).
TORCH_DENSE_BWD_MAX_P = 64

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_BACKEND_NAMES = ("auto", "triton", "torch", "reference")
_MAX_GRID_Y = 65535  # CUDA limit of grid dimension 1, where the Triton kernels put the visual sample index


# ----------------------------------------------------------------------------------------------------------------
# 1. Triton kernels
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _maxsim_fwd_kernel(
    a_ptr, v_ptr, s_ptr, idx_ptr,
    Na, D, P,
    stride_ai, stride_ad,
    stride_vm, stride_vd, stride_vp,
    stride_si, stride_sm,
    BLOCK_A: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
    A_RESIDENT: tl.constexpr,  # D <= BLOCK_D: the audio block is loaded once and kept in registers
    INPUT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # cast tiles to fp32 before tl.dot (only for bf16 in the interpreter, see _triton_forward)
):
    """One program = BLOCK_A audio rows x one visual sample m. Walks the P positions of v_m in tiles of BLOCK_P;
    each tile is a (BLOCK_A x BLOCK_P) tl.dot accumulated over D in chunks of BLOCK_D (masked at the edges), then
    folded into a running max / argmax kept in registers. Writes S[i, m] (fp32) and idx[i, m] (int32)."""
    pid_a = tl.program_id(0)
    m = tl.program_id(1)

    offs_a = pid_a * BLOCK_A + tl.arange(0, BLOCK_A)
    mask_a = offs_a < Na
    offs_k = tl.arange(0, BLOCK_D)
    offs_t = tl.arange(0, BLOCK_P)
    a_rows = a_ptr + offs_a[:, None] * stride_ai
    v_m = v_ptr + m.to(tl.int64) * stride_vm

    if A_RESIDENT:
        a_res = tl.load(a_rows + offs_k[None, :] * stride_ad,
                        mask=mask_a[:, None] & (offs_k[None, :] < D), other=0.0)
        if UPCAST:
            a_res = a_res.to(tl.float32)

    run_max = tl.full((BLOCK_A,), float("-inf"), tl.float32)
    run_idx = tl.zeros((BLOCK_A,), dtype=tl.int32)
    for p0 in range(0, P, BLOCK_P):
        offs_p = p0 + offs_t
        mask_p = offs_p < P
        acc = tl.zeros((BLOCK_A, BLOCK_P), dtype=tl.float32)
        if A_RESIDENT:
            v_tile = tl.load(v_m + offs_k[:, None] * stride_vd + offs_p[None, :] * stride_vp,
                             mask=(offs_k[:, None] < D) & mask_p[None, :], other=0.0)
            if UPCAST:
                v_tile = v_tile.to(tl.float32)
            acc = tl.dot(a_res, v_tile, acc, input_precision=INPUT_PRECISION)
        else:
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + offs_k
                mask_d = offs_d < D
                a_blk = tl.load(a_rows + offs_d[None, :] * stride_ad,
                                mask=mask_a[:, None] & mask_d[None, :], other=0.0)
                v_tile = tl.load(v_m + offs_d[:, None] * stride_vd + offs_p[None, :] * stride_vp,
                                 mask=mask_d[:, None] & mask_p[None, :], other=0.0)
                if UPCAST:
                    a_blk = a_blk.to(tl.float32)
                    v_tile = v_tile.to(tl.float32)
                acc = tl.dot(a_blk, v_tile, acc, input_precision=INPUT_PRECISION)
        # Positions past P must never win.
        acc = tl.where(mask_p[None, :], acc, float("-inf"))
        tile_max = tl.max(acc, axis=1)
        # First index of the tile maximum (manual argmax: smallest p among the positions equal to the max).
        cand = tl.where(acc == tile_max[:, None], offs_p[None, :], P)
        tile_idx = tl.min(cand, axis=1)
        # Strict '>' keeps the earlier tile on ties, so overall the first index wins.
        better = tile_max > run_max
        run_idx = tl.where(better, tile_idx, run_idx)
        run_max = tl.where(better, tile_max, run_max)

    out = offs_a * stride_si + m * stride_sm
    tl.store(s_ptr + out, run_max, mask=mask_a)
    tl.store(idx_ptr + out, run_idx, mask=mask_a)


@triton.jit
def _maxsim_bwd_audio_kernel(
    g_ptr, idx_ptr, v_ptr, ga_ptr,
    Na, Nv, D,
    stride_gi, stride_gm,  # shared by g (fp32) and idx (int32), both contiguous (Na, Nv)
    stride_vm, stride_vd, stride_vp,
    stride_gai, stride_gad,
    BLOCK_A: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """grad_audio[i, d] = sum_m g[i, m] * v[m, d, idx[i, m]]: a gather of one column per (i, m), no atomics.
    One program = BLOCK_A rows x BLOCK_D features, looping over the Nv visual samples."""
    pid_a = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_a = pid_a * BLOCK_A + tl.arange(0, BLOCK_A)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_a = offs_a < Na
    mask_ad = mask_a[:, None] & (offs_d[None, :] < D)

    gi_ptrs = g_ptr + offs_a * stride_gi
    ii_ptrs = idx_ptr + offs_a * stride_gi
    v_m = v_ptr + offs_d[None, :] * stride_vd
    acc = tl.zeros((BLOCK_A, BLOCK_D), dtype=tl.float32)
    for m in range(0, Nv):
        g = tl.load(gi_ptrs + m * stride_gm, mask=mask_a, other=0.0)
        p = tl.load(ii_ptrs + m * stride_gm, mask=mask_a, other=0)
        cols = tl.load(v_m + p[:, None] * stride_vp, mask=mask_ad, other=0.0)
        acc += g[:, None] * cols.to(tl.float32)
        v_m += stride_vm  # pointer increment: no int32 overflow of m * stride_vm on large inputs

    ga = ga_ptr + offs_a[:, None] * stride_gai + offs_d[None, :] * stride_gad
    tl.store(ga, acc.to(ga_ptr.dtype.element_ty), mask=mask_ad)


@triton.jit
def _maxsim_bwd_visual_kernel(
    g_ptr, idx_ptr, a_ptr, gv_ptr,
    Na, D,
    stride_gi, stride_gm,
    stride_ai, stride_ad,
    stride_gvm, stride_gvd, stride_gvp,
    BLOCK_A: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """grad_visual[m, :, p] += g[i, m] * audio[i] for every i with idx[i, m] == p.
    Several rows can share one argmax, within a program and across programs, so the scatter uses fp32 atomics
    into a zero-initialised fp32 buffer (cast to the input dtype afterwards). Consequence: the summation order of
    colliding rows is not fixed, so grad_visual is NOT bitwise deterministic on GPU (differences ~1 fp32 ulp).
    One program = BLOCK_A rows x one visual sample m, looping over D in chunks of BLOCK_D."""
    pid_a = tl.program_id(0)
    m = tl.program_id(1)
    offs_a = pid_a * BLOCK_A + tl.arange(0, BLOCK_A)
    mask_a = offs_a < Na
    g = tl.load(g_ptr + offs_a * stride_gi + m * stride_gm, mask=mask_a, other=0.0)
    p = tl.load(idx_ptr + offs_a * stride_gi + m * stride_gm, mask=mask_a, other=0)

    gv_cols = gv_ptr + m.to(tl.int64) * stride_gvm + p[:, None] * stride_gvp
    a_rows = a_ptr + offs_a[:, None] * stride_ai
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask = mask_a[:, None] & (offs_d[None, :] < D)
        a_blk = tl.load(a_rows + offs_d[None, :] * stride_ad, mask=mask, other=0.0).to(tl.float32)
        tl.atomic_add(gv_cols + offs_d[None, :] * stride_gvd, g[:, None] * a_blk, mask=mask, sem="relaxed")


# ----------------------------------------------------------------------------------------------------------------
# 2. autograd.Function around the Triton kernels
# ----------------------------------------------------------------------------------------------------------------
def _next_pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


def _cdiv(a, b):
    return (a + b - 1) // b


def _device_ctx(t):
    """Triton launches on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _triton_fwd_config(Na, Nv, D, P, dtype, device):
    """Tile sizes for the forward kernel. tl.dot needs every dimension >= 16."""
    if TRITON_BLOCKS is not None:
        return dict(TRITON_BLOCKS)
    on_gpu = device.type == "cuda" and not _INTERPRET
    block_a = min(64, max(16, _next_pow2(Na)))
    block_p = min(128 if on_gpu else 64, max(16, _next_pow2(P)))
    block_d = min(128 if (on_gpu and dtype != torch.float32) else 64, max(16, _next_pow2(D)))
    if on_gpu:
        # Small batches: shrink the audio block until there are ~2 programs per SM (the programs that share a
        # visual sample are adjacent in launch order, so v_m is re-read from L2, not HBM). Heuristic, untuned.
        n_sm = torch.cuda.get_device_properties(device).multi_processor_count
        while block_a > 16 and _cdiv(Na, block_a) * Nv < 2 * n_sm:
            block_a //= 2
    return dict(block_a=block_a, block_p=block_p, block_d=block_d)


def _triton_forward(audio, visual, precision=None):
    """Launch the forward kernel. audio (Na, D), visual (Nv, D, P), any strides.
    Returns S (Na, Nv) float32 and idx (Na, Nv) int32 (first argmax)."""
    Na, D = audio.shape
    Nv, _, P = visual.shape
    cfg = _triton_fwd_config(Na, Nv, D, P, audio.dtype, audio.device)
    if precision is None:
        precision = FP32_INPUT_PRECISION if audio.dtype == torch.float32 else "ieee"
    # The Triton interpreter stores bf16 as raw uint16 and its tl.dot multiplies the bit patterns
    # (triton-lang/triton#11584, "not supported yet"), so there the bf16 tiles are upcast to fp32 first.
    # bf16 x bf16 products are exact in fp32, so only the summation order differs from the GPU path.
    upcast = _INTERPRET and audio.dtype == torch.bfloat16
    S = torch.empty((Na, Nv), device=audio.device, dtype=torch.float32)
    idx = torch.empty((Na, Nv), device=audio.device, dtype=torch.int32)
    grid = (_cdiv(Na, cfg["block_a"]), Nv)
    with _device_ctx(audio):
        _maxsim_fwd_kernel[grid](
            audio, visual, S, idx,
            Na, D, P,
            audio.stride(0), audio.stride(1),
            visual.stride(0), visual.stride(1), visual.stride(2),
            S.stride(0), S.stride(1),
            BLOCK_A=cfg["block_a"], BLOCK_P=cfg["block_p"], BLOCK_D=cfg["block_d"],
            A_RESIDENT=D <= cfg["block_d"], INPUT_PRECISION=precision, UPCAST=upcast,
            num_warps=4, num_stages=3,
        )
    return S, idx


def _triton_backward(g, idx, audio, visual, need_audio, need_visual):
    """g (Na, Nv) fp32 contiguous, idx (Na, Nv) int32 contiguous. Returns (grad_audio, grad_visual) or Nones."""
    Na, D = audio.shape
    Nv, _, P = visual.shape
    grad_audio = grad_visual = None
    block_a = 16
    block_d = min(64, max(16, _next_pow2(D)))
    with _device_ctx(audio):
        if need_audio:
            grad_audio = torch.empty((Na, D), device=audio.device, dtype=audio.dtype)
            _maxsim_bwd_audio_kernel[(_cdiv(Na, block_a), _cdiv(D, block_d))](
                g, idx, visual, grad_audio,
                Na, Nv, D,
                g.stride(0), g.stride(1),
                visual.stride(0), visual.stride(1), visual.stride(2),
                grad_audio.stride(0), grad_audio.stride(1),
                BLOCK_A=block_a, BLOCK_D=block_d, num_warps=4,
            )
        if need_visual:
            gv32 = torch.zeros((Nv, D, P), device=visual.device, dtype=torch.float32)
            _maxsim_bwd_visual_kernel[(_cdiv(Na, block_a), Nv)](
                g, idx, audio, gv32,
                Na, D,
                g.stride(0), g.stride(1),
                audio.stride(0), audio.stride(1),
                gv32.stride(0), gv32.stride(1), gv32.stride(2),
                BLOCK_A=block_a, BLOCK_D=block_d, num_warps=4,
            )
            grad_visual = gv32 if visual.dtype == torch.float32 else gv32.to(visual.dtype)
    return grad_audio, grad_visual


class _TritonMaxSim(torch.autograd.Function):
    @staticmethod
    def forward(ctx, audio, visual):
        S, idx = _triton_forward(audio, visual)
        ctx.save_for_backward(audio, visual, idx)  # inputs (already alive) + idx: Na * Nv int32
        return S

    @staticmethod
    def backward(ctx, grad_S):
        audio, visual, idx = ctx.saved_tensors
        g = grad_S.to(torch.float32).contiguous()  # also materialises expanded (stride-0) gradients
        return _triton_backward(g, idx, audio, visual, ctx.needs_input_grad[0], ctx.needs_input_grad[1])


# ----------------------------------------------------------------------------------------------------------------
# 3. "torch" backend: memory-lean pure PyTorch
# ----------------------------------------------------------------------------------------------------------------
def _torch_budget(device):
    return TORCH_BLOCK_ELEMENTS.get(device.type, TORCH_BLOCK_ELEMENTS["cpu"])


def _torch_forward(audio, visual):
    """S (Na, Nv) fp32 and idx (Na, Nv) int64, never holding more than about `budget` similarity elements at once
    (blocks of audio rows x visual samples x all P; if one row x one sample exceeds the budget, that is the block).
    16-bit inputs are upcast one chunk of visual samples at a time, counted in the same budget."""
    Na, D = audio.shape
    Nv, _, P = visual.shape
    budget = _torch_budget(audio.device)
    # detach: inside autograd.Function.forward grad mode is off, but torch.matmul still picks a path that copies a
    # transposed chunk of visual (32 MiB at B = 64, P = 56*56) when an operand has requires_grad set; an explicit
    # bmm on detached tensors does not.
    audio, visual = audio.detach(), visual.detach()
    a32 = audio.to(torch.float32)
    rows = _cdiv(Na, _cdiv(Na, max(1, budget // P)))  # equal-sized row blocks
    per_sample = rows * P + (0 if visual.dtype == torch.float32 else D * P)
    chunk = max(1, min(Nv, budget // per_sample))

    S = torch.empty((Na, Nv), device=audio.device, dtype=torch.float32)
    idx = torch.empty((Na, Nv), device=audio.device, dtype=torch.int64)
    for m0 in range(0, Nv, chunk):
        m1 = min(Nv, m0 + chunk)
        v = visual[m0:m1].to(torch.float32)  # a view for fp32 inputs
        for i0 in range(0, Na, rows):
            i1 = min(Na, i0 + rows)
            block = torch.bmm(a32[i0:i1].expand(m1 - m0, -1, -1), v)  # (c, rows, P)
            val, arg = block.max(dim=-1)  # first index on ties (documented for torch.max)
            S[i0:i1, m0:m1] = val.T
            idx[i0:i1, m0:m1] = arg.T
            del block, val, arg
    return S, idx


def _torch_backward(g, idx, audio, visual, need_audio, need_visual):
    """Gradients from the saved argmax only, a chunk of visual samples at a time (bounded by the same budget).
    Large P: gather the Na x c argmax columns for grad_audio, scatter_add g * audio into grad_visual.
    Small P (<= TORCH_DENSE_BWD_MAX_P): the gather/scatter index overhead costs more than two small batched
    matmuls with a one-hot weight W[m, i, p] = g[i, m] * [idx[i, m] == p], so that form is used instead
    (on a 2-core CPU the crossover lay between P = 49 and P = 196)."""
    Na, D = audio.shape
    Nv, _, P = visual.shape
    audio, visual = audio.detach(), visual.detach()
    dense = P <= TORCH_DENSE_BWD_MAX_P
    budget = _torch_budget(audio.device)
    extra = 0 if visual.dtype == torch.float32 else D * P  # fp32 copy of a 16-bit visual sample
    if dense:  # one-hot block (c, rows, P) and matmul result (c, rows, D); rows split as in the forward
        rows = _cdiv(Na, _cdiv(Na, max(1, budget // max(P, D))))
        per_sample = rows * max(P, D) + extra
    else:  # gathered columns (Na, c, D), then (after they are freed) the scatter source (c, D, Na)
        rows = Na
        per_sample = Na * D + extra
    chunk = max(1, min(Nv, budget // per_sample))
    dev = audio.device
    grad_audio = torch.zeros((Na, D), device=dev, dtype=torch.float32) if need_audio else None
    grad_visual = None
    if need_visual:
        overwrite = dense and rows == Na  # a single bmm then writes every element of its chunk
        grad_visual = (torch.empty if overwrite else torch.zeros)((Nv, D, P), device=dev, dtype=torch.float32)
    a32 = audio.to(torch.float32)
    for m0 in range(0, Nv, chunk):
        m1 = min(Nv, m0 + chunk)
        c = m1 - m0
        g_c, idx_c = g[:, m0:m1], idx[:, m0:m1]  # (Na, c)
        if dense:
            v = visual[m0:m1].to(torch.float32) if need_audio else None
            for i0 in range(0, Na, rows):
                i1 = min(Na, i0 + rows)
                w = torch.zeros((c, i1 - i0, P), device=dev, dtype=torch.float32)
                w.scatter_(2, idx_c[i0:i1].T.unsqueeze(2), g_c[i0:i1].T.unsqueeze(2))
                if need_audio:
                    grad_audio[i0:i1] += torch.bmm(w, v.transpose(1, 2)).sum(0)
                if need_visual:
                    a_t = a32[i0:i1].T.expand(c, -1, -1)  # (c, D, rows)
                    if overwrite:
                        torch.bmm(a_t, w, out=grad_visual[m0:m1])
                    else:
                        grad_visual[m0:m1].baddbmm_(a_t, w)
                del w
            del v
            continue
        if need_audio:
            sel = torch.arange(c, device=dev)
            cols = visual[m0:m1][sel[None, :], :, idx_c].to(torch.float32)  # (Na, c, D): v[m, :, idx[i, m]]
            grad_audio += torch.bmm(g_c.unsqueeze(1), cols).squeeze(1)
            del cols
        if need_visual:
            src = g_c.T[:, None, :] * a32.T[None, :, :]  # (c, D, Na): g[i, m] * a[i, d]
            index = idx_c.T[:, None, :].expand(c, D, Na)
            grad_visual[m0:m1].scatter_add_(2, index, src)
            del src
    if grad_audio is not None:
        grad_audio = grad_audio.to(audio.dtype)
    if grad_visual is not None and visual.dtype != torch.float32:
        grad_visual = grad_visual.to(visual.dtype)
    return grad_audio, grad_visual


class _TorchMaxSim(torch.autograd.Function):
    @staticmethod
    def forward(ctx, audio, visual):
        S, idx = _torch_forward(audio, visual)
        ctx.save_for_backward(audio, visual, idx)
        return S

    @staticmethod
    def backward(ctx, grad_S):
        audio, visual, idx = ctx.saved_tensors
        g = grad_S.to(torch.float32)
        return _torch_backward(g, idx, audio, visual, ctx.needs_input_grad[0], ctx.needs_input_grad[1])


# ----------------------------------------------------------------------------------------------------------------
# 4. "reference": the definition (materialises the full (Na, Nv, P) similarity tensor)
# ----------------------------------------------------------------------------------------------------------------
def _reference(audio, visual):
    sim = torch.einsum("id,mdp->imp", audio.to(torch.float32), visual.to(torch.float32))
    return sim.max(dim=-1).values  # autograd of max(dim) routes the gradient to the first argmax


# ----------------------------------------------------------------------------------------------------------------
# 5. public API
# ----------------------------------------------------------------------------------------------------------------
def _check_inputs(audio, visual):
    """Validate and return (audio, visual viewed as (Nv, D, P))."""
    for name, t in (("audio", audio), ("visual", visual)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"maxsim: expected `{name}` to be a torch.Tensor, got {type(t).__name__}")
    if audio.dim() != 2:
        raise ValueError(f"maxsim: expected audio of shape (Na, D), got a {audio.dim()}-D tensor "
                         f"of shape {tuple(audio.shape)}")
    if visual.dim() not in (3, 4):
        raise ValueError(f"maxsim: expected visual of shape (Nv, D, H, W) or (Nv, D, P), got a {visual.dim()}-D "
                         f"tensor of shape {tuple(visual.shape)}")
    if visual.shape[1] != audio.shape[1]:
        raise ValueError(f"maxsim: feature dimension mismatch: audio is {tuple(audio.shape)} (D={audio.shape[1]}) "
                         f"but visual is {tuple(visual.shape)} (D={visual.shape[1]}); expected the same D")
    if audio.device != visual.device:
        raise ValueError(f"maxsim: expected audio and visual on the same device, got {audio.device} and "
                         f"{visual.device}")
    if audio.dtype != visual.dtype:
        raise ValueError(f"maxsim: expected audio and visual with the same dtype, got {audio.dtype} and "
                         f"{visual.dtype}")
    if audio.dtype not in _DTYPES:
        raise ValueError(f"maxsim: expected float32, bfloat16 or float16 inputs, got {audio.dtype}")
    if audio.numel() == 0 or visual.numel() == 0:
        raise ValueError(f"maxsim: expected non-empty inputs, got audio {tuple(audio.shape)} and visual "
                         f"{tuple(visual.shape)}")
    return audio, visual.reshape(visual.shape[0], visual.shape[1], -1)


def _check_backend(backend):
    if not isinstance(backend, str) or backend not in _BACKEND_NAMES:
        raise ValueError(f"maxsim: unknown backend {backend!r}; expected one of {', '.join(map(repr, _BACKEND_NAMES))}")


def _resolve_backend(backend, tensor):
    """Name of the implementation that `backend` selects for inputs living where `tensor` lives."""
    _check_backend(backend)
    if backend == "auto":
        return "triton" if tensor.is_cuda else "torch"
    if backend == "triton" and not tensor.is_cuda and not _INTERPRET:
        raise ValueError(f"maxsim: backend='triton' needs CUDA tensors, got tensors on {tensor.device}; move the "
                         "inputs to a CUDA device, or set TRITON_INTERPRET=1 before importing `kernels` to run the "
                         "Triton kernels in the (slow) interpreter on CPU")
    return backend


def maxsim(audio, visual, backend="auto"):
    """S[i, m] = max_p <audio[i], visual[m, :, p]> as an (Na, Nv) float32 tensor, differentiable in both inputs.

    audio: (Na, D); visual: (Nv, D, H, W) or (Nv, D, P); same device, same dtype (float32, bfloat16 or float16).
    backend: "auto" (triton on CUDA tensors, torch otherwise), "triton", "torch" (chunked, memory-lean) or
    "reference" (the plain einsum + max definition). Raises ValueError on invalid inputs or backend.
    """
    _check_backend(backend)
    audio, visual3 = _check_inputs(audio, visual)
    name = _resolve_backend(backend, audio)
    if name == "triton":
        if visual3.shape[0] > _MAX_GRID_Y:
            raise ValueError(f"maxsim: backend='triton' supports at most {_MAX_GRID_Y} visual samples, "
                             f"got {visual3.shape[0]}")
        return _TritonMaxSim.apply(audio, visual3)
    if name == "torch":
        return _TorchMaxSim.apply(audio, visual3)
    return _reference(audio, visual3)
