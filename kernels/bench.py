"""Benchmark of kernels.maxsim: forward time, forward+backward time and peak extra memory per backend.

    python kernels/bench.py [--out FILE.json] [--batch-sizes 64 256 512] [--quick] [--dtype float32]

Setting: B audio x B visual samples, D = 512, the paper's four visual scales 56x56, 28x28, 14x14, 7x7, each scale
a SEPARATE row (not summed). Inputs are L2-normalised Gaussians and require grad (the training setting); the
backward is torch.autograd.grad(S, (audio, visual), g) for a fixed random g (B x B).

Backends: on a GPU triton, torch, reference; on CPU torch and reference (the Triton interpreter is not a benchmark).
Every (batch size, backend, measurement kind) runs in a fresh subprocess, so an out-of-memory failure (or the
kernel's OOM killer) only costs that row its numbers: it is printed as "OOM".

Time: median over repeats after one warm-up call (CPU: perf_counter; GPU: CUDA events); on CPU a warm-up call
that already took longer than --time-budget is itself the (single) measurement.
Peak extra memory = high-water mark during the call minus what was allocated just before it (inputs, already
allocated, are not counted; outputs and gradients are).
  GPU: torch.cuda.max_memory_allocated after reset_peak_memory_stats.
  CPU: the process' resident-set high-water mark (VmHWM, reset before each measurement by writing 5 to
       /proc/self/clear_refs; if that is not allowed, a fresh process per measurement and ru_maxrss), with
       MALLOC_MMAP_THRESHOLD_=65536 in that process so that freed buffers go back to the OS and reuse cannot hide a
       peak. That setting changes allocation speed, so times come from a separate process with default malloc.
  On CPU, each worker also gets RLIMIT_AS = its size + a fraction of MemAvailable, so an oversized reference fails
  with a Python exception instead of swapping or waking the OOM killer.
GPU only: the bandwidth floor of the forward = bytes of `visual` read once / device copy bandwidth (measured as
2 x bytes / time of a 1 GiB tensor copy).
"""
import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

SCALES = (56, 28, 14, 7)
QUICK = dict(batch_sizes=[8], dim=32, scales=(8, 4), repeats=3)
_RESULT = "RESULT "


# --------------------------------------------------------------------------------------------------- worker side
def _proc_status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB -> bytes
    raise KeyError(field)


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _is_oom(exc):
    import torch

    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or isinstance(exc, MemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in msg or "out of memory" in msg.lower())


def _make_inputs(B, D, side, dtype, device):
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    audio = torch.randn(B, D, generator=gen, device=device, dtype=dtype)
    audio.div_(audio.norm(dim=1, keepdim=True))
    visual = torch.randn(B, D, side, side, generator=gen, device=device, dtype=dtype)
    visual.div_(visual.norm(dim=1, keepdim=True))  # in place: no transient copy of the largest tensor
    g = torch.randn(B, B, generator=gen, device=device)
    return audio.requires_grad_(), visual.requires_grad_(), g


def _closures(backend, audio, visual, g):
    import torch
    from kernels import maxsim

    def fwd():
        return maxsim(audio, visual, backend=backend)

    def fwd_bwd():
        S = maxsim(audio, visual, backend=backend)
        return torch.autograd.grad(S, (audio, visual), g)

    return fwd, fwd_bwd


def _time(fn, device, repeats, budget_s, min_time_s=1.0, max_repeats=200):
    """Median time of fn() in ms and the number of timed runs: at least `repeats` runs (unless one run already
    exceeds `budget_s`), and more, up to `max_repeats`, until `min_time_s` has been spent, so that the
    millisecond-scale rows get a stable median."""
    import torch

    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    out = fn()  # warm-up (and Triton compilation)
    del out
    if cuda:
        torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    if not cuda and warm >= budget_s:
        # CPU, very large shapes: the worker already made one tiny call for lazy initialisation, so this first
        # full-size call is representative; repeating a call of many seconds only costs time.
        return warm * 1e3, 1
    times, spent = [], 0.0
    while not times or (len(times) < repeats and spent < budget_s) or (spent < min_time_s and len(times) < max_repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
        del out
        times.append(dt)
        spent += dt
    return statistics.median(times) * 1e3, len(times)


def _peak_extra(fn, device):
    """Peak bytes above the current allocation while fn() runs (its result kept alive until measured)."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        if not _reset_hwm():
            raise RuntimeError("cannot reset VmHWM")
        base = _proc_status("VmRSS")
        out = fn()
        peak = _proc_status("VmHWM") - base
    del out
    return peak


def _peak_extra_fresh_process(fn):
    """Fallback without clear_refs: this process was started for this one measurement; ru_maxrss is its HWM."""
    gc.collect()
    base_rss = _proc_status("VmRSS")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del out
    # If setup had a higher transient peak than the call, the call's peak is unknown beyond "at most that".
    return max(after, before) - base_rss if after > before else None


def worker(spec):
    import torch

    if spec.get("mem_limit"):
        size = _proc_status("VmSize")
        resource.setrlimit(resource.RLIMIT_AS, (size + int(spec["mem_limit"]), resource.RLIM_INFINITY))
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    # One tiny call first, so that one-time lazy initialisation (thread pools, autograd engine, kernel compilation
    # for the smallest shape) is not counted as the first row's memory.
    tiny = _make_inputs(2, spec["D"], 2, dtype, device)
    _closures(spec["backend"], *tiny)[1]()
    del tiny
    for side in spec["scales"]:
        row = dict(B=spec["B"], side=side, P=side * side, backend=spec["backend"])
        try:
            audio, visual, g = _make_inputs(spec["B"], spec["D"], side, dtype, device)
        except Exception as exc:  # noqa: BLE001 -- a failed row is reported, not fatal
            row["error"] = _describe(exc)
            print(_RESULT + json.dumps(row), flush=True)
            continue
        fwd, fwd_bwd = _closures(spec["backend"], audio, visual, g)
        steps = []
        if spec["kind"] in ("time", "all"):
            steps += [("fwd_ms", lambda: _time(fwd, device, spec["repeats"], spec["budget_s"])),
                      ("fwd_bwd_ms", lambda: _time(fwd_bwd, device, spec["repeats"], spec["budget_s"]))]
        if spec["kind"] in ("mem", "all"):
            steps += [("peak_fwd_bytes", lambda: _peak_extra(fwd, device)),
                      ("peak_fwd_bwd_bytes", lambda: _peak_extra(fwd_bwd, device))]
        if spec["kind"] == "mem_fwd":
            steps += [("peak_fwd_bytes", lambda: _peak_extra_fresh_process(fwd))]
        if spec["kind"] == "mem_fwd_bwd":
            steps += [("peak_fwd_bwd_bytes", lambda: _peak_extra_fresh_process(fwd_bwd))]
        for key, step in steps:  # each measurement fails on its own: a reference whose backward does not fit
            try:                 # still reports its forward
                value = step()
                if isinstance(value, tuple):
                    row[key], row[key.replace("_ms", "_n")] = value
                else:
                    row[key] = value
            except Exception as exc:  # noqa: BLE001
                row[key] = _describe(exc)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        audio = visual = g = fwd = fwd_bwd = steps = None  # release the inputs before the next scale
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(_RESULT + json.dumps(row), flush=True)


def _describe(exc):
    return "OOM" if _is_oom(exc) else f"error: {type(exc).__name__}: {exc}"[:200]


# --------------------------------------------------------------------------------------------------- parent side
def _mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _can_reset_hwm():
    return _reset_hwm()


def _run_worker(spec, env_extra=None, timeout=None):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.update(env_extra or {})
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {}, "timeout"
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT):
            row = json.loads(line[len(_RESULT):])
            rows[row["side"]] = row
    failure = None
    if proc.returncode != 0:
        failure = "OOM" if proc.returncode in (-9, 137) else f"worker rc={proc.returncode}: {proc.stderr[-300:]}"
    return rows, failure


def _copy_bandwidth(device):
    import torch

    x = torch.empty(1 << 28, device=device, dtype=torch.float32)  # 1 GiB
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 10
    start.record()
    for _ in range(reps):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / reps
    bw = 2 * x.numel() * x.element_size() / seconds
    del x, y
    torch.cuda.empty_cache()
    return bw


def _fmt(row, key, scale, digits):
    v = row.get(key, row.get("error"))
    if v is None:
        return "-"
    if isinstance(v, str):
        return "OOM" if v == "OOM" else "error"
    return f"{v / scale:.{digits}f}"


def _ratio(row, ref, key):
    num = row.get(key)
    den = (ref or {}).get(key)
    if not isinstance(num, (int, float)) or not isinstance(den, (int, float)) or not den:
        return "-"
    return f"{num / den:.3f}"


def print_table(rows, on_gpu):
    head = ["B", "HxW", "backend", "fwd ms", "x ref", "fwd+bwd ms", "x ref", "peak fwd MiB", "x ref",
            "peak fwd+bwd MiB", "x ref"] + (["floor ms"] if on_gpu else [])
    table = [head]
    refs = {(r["B"], r["side"]): r for r in rows if r["backend"] == "reference"}
    for r in rows:
        ref = refs.get((r["B"], r["side"]))
        line = [str(r["B"]), f'{r["side"]}x{r["side"]}', r["backend"],
                _fmt(r, "fwd_ms", 1, 2), _ratio(r, ref, "fwd_ms"),
                _fmt(r, "fwd_bwd_ms", 1, 2), _ratio(r, ref, "fwd_bwd_ms"),
                _fmt(r, "peak_fwd_bytes", 2**20, 1), _ratio(r, ref, "peak_fwd_bytes"),
                _fmt(r, "peak_fwd_bwd_bytes", 2**20, 1), _ratio(r, ref, "peak_fwd_bwd_bytes")]
        if on_gpu:
            line.append(f'{r["floor_ms"]:.3f}' if r.get("floor_ms") is not None else "-")
        table.append(line)
    # Per batch size and backend, the forward / forward+backward times summed over the scales (one training step
    # runs all four); memory is not summed (peaks of separate calls do not add up).
    for key in dict.fromkeys((r["B"], r["backend"]) for r in rows):
        group = [r for r in rows if (r["B"], r["backend"]) == key]
        if len(group) < 2:
            continue
        sums = {}
        for k in ("fwd_ms", "fwd_bwd_ms"):
            vals = [r.get(k) for r in group]
            sums[k] = sum(vals) if all(isinstance(v, (int, float)) for v in vals) else None
        ref_group = [r for r in rows if (r["B"], r["backend"]) == (key[0], "reference")]
        ref_sums = {}
        for k in ("fwd_ms", "fwd_bwd_ms"):
            vals = [r.get(k) for r in ref_group]
            ok = len(vals) == len(group) and all(isinstance(v, (int, float)) for v in vals)
            ref_sums[k] = sum(vals) if ok else None
        line = [str(key[0]), "sum", key[1]]
        for k in ("fwd_ms", "fwd_bwd_ms"):
            line.append("-" if sums[k] is None else f"{sums[k]:.2f}")
            line.append(f"{sums[k] / ref_sums[k]:.3f}" if sums[k] is not None and ref_sums[k] else "-")
        line += ["-", "-", "-", "-"] + (["-"] if on_gpu else [])
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for k, row in enumerate(table):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        for k, v in r.items():
            if isinstance(v, str) and v.startswith("error"):
                print(f'note: B={r["B"]} {r["side"]}x{r["side"]} {r["backend"]} {k}: {v}')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the results as JSON to this file")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 512])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, a smoke test that finishes in seconds")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--backends", nargs="+", help="default: triton torch reference on GPU, torch reference on CPU")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 20 GPU, 5 CPU)")
    ap.add_argument("--time-budget", type=float, default=10.0,
                    help="stop repeating a measurement once it has taken this many seconds (at least 1 run)")
    ap.add_argument("--mem-fraction", type=float, default=0.75,
                    help="CPU: address-space limit per worker = this fraction of MemAvailable")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the workers (default: torch's)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return

    import torch

    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    backends = args.backends or (["triton", "torch", "reference"] if on_gpu else ["torch", "reference"])
    batch_sizes, dim, scales = args.batch_sizes, args.dim, SCALES
    repeats = args.repeats or (20 if on_gpu else 5)
    if args.quick:
        batch_sizes, dim, scales, repeats = QUICK["batch_sizes"], QUICK["dim"], QUICK["scales"], QUICK["repeats"]
    elem = torch.empty(0, dtype=getattr(torch, args.dtype)).element_size()

    meta = dict(device=torch.cuda.get_device_name(0) if on_gpu else _cpu_name(), torch=torch.__version__,
                cpu_threads=args.threads or torch.get_num_threads(), dtype=args.dtype, D=dim, scales="separate rows",
                quick=args.quick, python=platform.python_version())
    bandwidth = _copy_bandwidth(device) if on_gpu else None
    if on_gpu:
        import triton

        meta.update(triton=triton.__version__, copy_bandwidth_GBps=bandwidth / 1e9, memory_method="cuda max_memory_allocated")
    mem_limit = None
    if not on_gpu:
        avail = _mem_available()
        mem_limit = int(avail * args.mem_fraction) if avail else None
        meta.update(mem_limit_bytes=mem_limit)
        fresh = not _can_reset_hwm()
        meta.update(memory_method="VmHWM via /proc/self/clear_refs, MALLOC_MMAP_THRESHOLD_=65536" if not fresh
                    else "ru_maxrss in a fresh process per measurement, MALLOC_MMAP_THRESHOLD_=65536")
    print(f"# maxsim benchmark on {meta['device']} ({device}), torch {torch.__version__}, "
          f"dtype {args.dtype}, D={dim}, scales as separate rows", flush=True)

    rows = []
    for B in batch_sizes:
        for backend in backends:
            base = dict(B=B, D=dim, backend=backend, scales=list(scales), dtype=args.dtype, device=device,
                        repeats=repeats, budget_s=args.time_budget, mem_limit=mem_limit, threads=args.threads)
            t0 = time.time()
            if on_gpu or args.quick:
                # GPU: CUDA memory stats are exact in any process. --quick (a smoke test): one process, so CPU memory
                # figures are then measured with default malloc, less reliable than the full run's.
                parts = [(scales, *_run_worker(dict(base, kind="all")))]
            else:
                mem_env = {"MALLOC_MMAP_THRESHOLD_": "65536"}
                parts = [(scales, *_run_worker(dict(base, kind="time")))]
                if fresh:
                    for kind in ("mem_fwd", "mem_fwd_bwd"):
                        parts += [((s,), *_run_worker(dict(base, kind=kind, scales=[s]), mem_env)) for s in scales]
                else:
                    parts.append((scales, *_run_worker(dict(base, kind="mem"), mem_env)))
            for side in scales:
                row = dict(B=B, side=side, P=side * side, backend=backend)
                for covered, results, failure in parts:
                    r = results.get(side)
                    if r is None:  # the worker died before reporting this scale (e.g. killed for memory)
                        if failure and side in covered:
                            row.setdefault("error", failure)
                        continue
                    for k, v in r.items():
                        if k == "error":
                            row.setdefault("error", v)
                        else:
                            row[k] = v
                if on_gpu:
                    row["floor_ms"] = B * dim * side * side * elem / bandwidth * 1e3
                rows.append(row)
            print(f"#   B={B} {backend}: {time.time() - t0:.1f} s", flush=True)

    print()
    print_table(rows, on_gpu)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)
        print(f"\nwrote {args.out}")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    return f"{name}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return platform.processor() or "cpu"


if __name__ == "__main__":
    main()
