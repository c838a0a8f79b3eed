"""Training speed: frames/s and peak memory of the loader alone, of one step of each phase alone (on tensors
already on the device), and of the loader and the WS-AVS step together.

    python bench/speed.py                                       # the paper preset: batch 64, 224 px, ResNet-50
    python bench/speed.py --preset small --batch-size 16 --img-size 96 --workers 0 2   # a CPU-sized run
    python bench/speed.py --amp bf16 --workers 16 --json speed.json

Rows:
  loader, W workers   train.py's training loader (frame, audio, pseudo mask; crop/flip) with W workers, on a
                      synthetic set written at --img-size (or --root), after its first batch
  phase 1a C2AM       one C2AM step (c2am_step_loss, backward, Adam), synthetic tensors on the device
  phase 1b saliency   one saliency-head step
  phase 2 WS-AVS      one WS-AVS step (Eq. 8 with M2ICL through kernels.maxsim, pseudo-mask BCE), under --amp
  loader + phase 2    the loader (the first --workers value) feeding WS-AVS steps
Times: median step over --steps steps after --warmup steps, the device synchronised around each. Peak memory:
on CUDA, torch.cuda.max_memory_allocated over the row; on the CPU, the process's resident-set high-water mark
over the row (VmHWM, reset before each row), which includes the Python process itself.
"""
import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import train                                                     # noqa: E402
from data import AVSBench, device_name, non_negative_int, positive_int, synthesize, write_mask_png  # noqa: E402
from kernels.bench import _proc_status, _reset_hwm                # noqa: E402
from wsavs import PRESETS, WSAVS, PseudoMaskNet, c2am_step_loss, preset_config, saliency_step_loss  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper", choices=list(PRESETS), help="the recipe (default paper)")
    p.add_argument("--batch-size", type=positive_int, help="frames per step (default: the preset's)")
    p.add_argument("--img-size", type=positive_int, help="frame size (default: the preset's)")
    p.add_argument("--backbone", choices=["resnet50", "resnet18"], help="default: the preset's")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="mixed precision of the WS-AVS step")
    p.add_argument("--workers", type=non_negative_int, nargs="+", default=[16],
                   help="loader workers; one loader row per value, the first feeds the combined row (default 16)")
    p.add_argument("--steps", type=positive_int, default=10, help="measured steps per row (default 10)")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="steps before measuring (default 2)")
    p.add_argument("--root", help="an AVSBench root to load from (default: a synthetic S4 set written at --img-size)")
    p.add_argument("--videos", type=positive_int, default=100, help="videos of the synthetic set (default 100)")
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", help="also write the table as JSON here")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("batch_size", args.batch_size), ("img_size", args.img_size),
                                   ("backbone", args.backbone)) if v is not None}
    args.cfg = preset_config(args.preset, pretrained=False, audio_pretrained=False, **overrides)
    if args.amp == "fp16" and not torch.cuda.is_available():
        p.error("--amp fp16 needs CUDA; use --amp bf16 on a CPU")
    return args


class Row:
    """Times steps and the peak memory of one row."""

    def __init__(self, device):
        self.device, self.times = device, []
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        self.rss_reset = device.type == "cpu" and _reset_hwm()

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def peak_bytes(self):
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return _proc_status("VmHWM") if self.rss_reset else None

    def result(self, name, frames_per_step):
        step = statistics.median(self.times)
        peak = self.peak_bytes()
        return {"row": name, "step_ms": 1000 * step, "frames_per_s": frames_per_step / step,
                "peak_mib": None if peak is None else peak / 2 ** 20}


def timed_steps(row, steps, warmup, step):
    for k in range(warmup + steps):
        row.sync()
        started = time.perf_counter()
        step()
        row.sync()
        if k >= warmup:
            row.times.append(time.perf_counter() - started)


def training_set(args, folder):
    """The training split with pseudo masks (all background: the loader's work does not depend on them)."""
    root = args.root
    if root is None:
        root = Path(folder) / "avsbench"
        synthesize(root, "s4", videos=args.videos, seed=0, size=args.cfg.img_size)
    plain = AVSBench(root, "s4", "train", img_size=args.cfg.img_size)
    for key in plain.keys:
        write_mask_png(Path(folder) / "pseudo" / f"{key}.png", np.zeros((8, 8)))
    return AVSBench(root, "s4", "train", img_size=args.cfg.img_size, augment=args.cfg.augment,
                    pseudo_mask_dir=Path(folder) / "pseudo")


def batches(dataset, args, workers, device):
    """Endless training batches (epoch after epoch) from train.py's loader."""
    loader = train.train_loader(dataset, args.cfg.batch_size, workers, seed=0, pin_memory=device.type == "cuda")
    epoch = 0
    while True:
        loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def main(argv=None):
    args = parse_args(argv)
    cfg, device = args.cfg, train.evaluation.pick_device(args.device)
    b, s = cfg.batch_size, cfg.img_size
    autocast = torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp),
                              enabled=args.amp != "off")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        dataset = training_set(args, folder)
        for workers in args.workers:                                           # (a) the loader alone
            stream = batches(dataset, args, workers, device)
            next(stream)                                                       # workers start, first batch
            row = Row(torch.device("cpu"))
            timed_steps(row, args.steps, args.warmup, lambda: next(stream))
            rows.append({**row.result(f"loader, {workers} workers", b), "workers": workers})
            del stream

        torch.manual_seed(0)                                                   # (b) each phase's step alone
        g = torch.Generator().manual_seed(0)
        image = torch.randn(b, 3, s, s, generator=g).to(device)
        audio = torch.randn(b, 1, 257, 300, generator=g).to(device)
        pseudo = (torch.rand(b, 1, s, s, generator=g) > 0.5).float().to(device)
        video_ids = torch.arange(b, device=device) // 5                        # 5 frames per video

        def optimised(loss_fn, parameters):
            optimizer = torch.optim.Adam(parameters, lr=cfg.lr)

            def step():
                loss = loss_fn()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            return step

        net = PseudoMaskNet(cfg).to(device).train()
        for name, loss_fn, parameters in (
                ("phase 1a C2AM", lambda: c2am_step_loss(net, image)[0],
                 list(net.visual_encoder.parameters()) + list(net.activation_head.parameters())),
                ("phase 1b saliency", lambda: saliency_step_loss(net, image), list(net.saliency_head.parameters()))):
            row = Row(device)
            timed_steps(row, args.steps, args.warmup, optimised(loss_fn, parameters))
            rows.append(row.result(name, b))
        del net

        model = WSAVS(cfg).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
        method = SimpleNamespace(method="wsavs", avf=True, pmr=True)

        def wsavs_step(batch):
            with autocast:
                loss, _ = train.batch_loss(method, cfg, model, batch, video_ids[:len(batch["image"])], device, None)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        row = Row(device)
        timed_steps(row, args.steps, args.warmup, lambda: wsavs_step({"image": image, "audio": audio,
                                                                      "pseudo_mask": pseudo}))
        rows.append(row.result("phase 2 WS-AVS", b))

        stream = batches(dataset, args, args.workers[0], device)                # (c) loader + WS-AVS step
        next(stream)
        row = Row(device)
        timed_steps(row, args.steps, args.warmup, lambda: wsavs_step(next(stream)))
        rows.append({**row.result(f"loader ({args.workers[0]} workers) + phase 2", b), "workers": args.workers[0]})
        del stream

    setting = {"preset": args.preset, "batch_size": b, "img_size": s, "backbone": cfg.backbone, "amp": args.amp,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
               "data": args.root or f"synthetic S4, {args.videos} videos"}
    print(" ".join(f"{k} {v}" for k, v in setting.items()))
    print("| row | ms / step | frames/s | frames/s per worker | peak MiB |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        per_worker = f"{r['frames_per_s'] / r['workers']:.1f}" if r.get("workers") else ""
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"| {r['row']} | {r['step_ms']:.1f} | {r['frames_per_s']:.1f} | {per_worker} | {peak} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"setting": setting, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
