"""Train and evaluate the paper's tables with the documented commands, then write the tables (markdown + JSON)
and the Figure 2 / Figure 4 analogues.

    python bench/run.py                                   # synthetic S4 and MS3, every table, CPU (hours)
    python bench/run.py --tables presets --subsets s4     # some tables
    python bench/run.py --root AVSBench --preset paper    # the real AVSBench: Table 1, Table 2, Figure 3 on a GPU

Every row is `python train.py --preset P <row flags>`, then `python eval.py best.pt` with true, swapped and
silent audio. On synthetic data the rows run at the `small` preset's scale (wsavs.SCALE_FIELDS): the `paper`
rows are the paper's recipe at that scale. A row's run folder is named by its resolved recipe and seed, so two
rows with the same recipe share one run, and a finished run (bench.json) is not run again; rows with the same
phase-1 recipe share their pseudo masks.

Tables (--tables): table1, table2 (the paper's, with --preset), figure3 (S4: fusion stages 1-4, batch 8-64),
presets (paper and small, --seeds), additions (small with each addition set to the paper's value, first seed),
hard (paper and small on a synthetic S4 set with two silent objects of equal size per frame, --seeds).
Everything goes under runs/bench; --publish writes the tables and figures into the committed bench/results/
and assets/ instead.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import eval as evaluation                                        # noqa: E402
import train                                                     # noqa: E402
from data import (SUBSET_DIRS, SYNTH_MARKER, AVSBench, collate, load_mask, read_frame, synthesize,  # noqa: E402
                  error_line, synthetic_stamp)
from wsavs import PRESETS, SCALE_FIELDS, Config, PseudoMaskNet, class_agnostic_map, differences  # noqa: E402

TABLE1 = {"AVS (ws)": ["--method", "avs-ws"], "CAM": ["--method", "cam"], "EZ-VSL": ["--method", "ezvsl"],
          "C2AM": ["--method", "c2am"], "WS-AVS": []}
TABLE2 = {"none (= AVS (ws))": TABLE1["AVS (ws)"], "AVF only": ["--no-pmr"], "PMR only": ["--no-avf"],
          "AVF + PMR (= WS-AVS)": []}
FIGURE3 = {**{f"fusion stages {k}": ["--fusion-stages", str(k)] for k in (1, 2, 3, 4)},
           **{f"batch {b}": ["--batch-size", str(b)] for b in (8, 16, 32, 64)}}
PRIORS = ("all foreground", "centre prior")
ALL_TABLES = ("table1", "table2", "figure3", "presets", "additions", "hard")
HARD = {"silent_objects": 2, "equal_size": True}                  # only the audio says which object sounds


def flag(field, value):
    """The train.py flags that set one Config field."""
    name = "--" + field.replace("_", "-")
    if isinstance(value, bool):
        return [name if value else "--no-" + name[2:]]
    return [name, str(value)]


def scale_flags(preset):
    """Flags that run `preset`'s recipe at the small preset's scale (SCALE_FIELDS)."""
    small = PRESETS["small"]
    return [f for field in SCALE_FIELDS if getattr(small, field) != getattr(PRESETS[preset], field)
            for f in flag(field, getattr(small, field))]


def addition_rows():
    """Each recipe field where small differs from paper (its additions), set back to the paper's value."""
    small, paper = PRESETS["small"], PRESETS["paper"]
    return {f"small, {field} = {getattr(paper, field)} (paper)": flag(field, getattr(paper, field))
            for field in differences(small, "paper") if field not in SCALE_FIELDS}


def slug(text):
    return "".join(c if c.isalnum() or c in "=._" else "-" for c in text.lower()).strip("-")


class Bench:
    def __init__(self, args):
        self.args, self.started = args, time.time()

    def log(self, line):
        print(f"[{(time.time() - self.started) / 60:5.1f} min] {line}", flush=True)

    def common(self, root, subset, seed):
        a = self.args
        return ["--root", str(root), "--subset", subset, "--seed", str(seed), "--workers", str(a.workers),
                "--device", a.device, *shlex.split(a.extra)]

    def run_row(self, name, flags, root, tag, subset, seed):
        """Train one row (unless done) and evaluate it with true, swapped and silent audio."""
        command = [*self.common(root, subset, seed), *flags]
        if " ".join(TABLE1["CAM"]) in " ".join(flags) and subset == "ms3":
            return None                                          # MS3 has no category labels
        parsed = train.parse_args(command)
        recipe = {**differences(parsed.cfg, parsed.preset), **({} if parsed.avf else {"avf": False}),
                  **({} if parsed.pmr else {"pmr": False})}
        key = "-".join([parsed.method, parsed.preset, *(f"{k}={v}" for k, v in recipe.items()), f"seed{seed}"])
        if len(key) > 100:                                       # keep the folder name short, still unique
            key = f"{key[:80]}-{hashlib.sha1(key.encode()).hexdigest()[:10]}-seed{seed}"
        out = REPO / self.args.runs / tag / subset / slug(key)
        record_path = out / "bench.json"
        if record_path.is_file():
            return json.loads(record_path.read_text())
        phase1 = None
        if parsed.method == "c2am" or (parsed.method == "wsavs" and parsed.pmr):
            recipe_hash = hashlib.sha1(json.dumps(train.pmr_recipe(parsed, parsed.cfg), sort_keys=True).encode())
            phase1 = REPO / self.args.runs / tag / subset / f"pmr-{recipe_hash.hexdigest()[:10]}"
            command += ["--pseudo-masks", str(phase1)]
        out.mkdir(parents=True, exist_ok=True)
        command = [*command, "--out", str(out), "--overwrite"]  # --overwrite: an unfinished run
        started = time.time()
        with open(out / "train.log", "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            train.main(command)                                   # `python train.py ...`, in this process
        record = {"row": name, "out": os.path.relpath(out, REPO), "seed": seed,
                  "pseudo_masks": phase1 and os.path.relpath(phase1, REPO),
                  "command": " ".join(["python", "train.py", *map(shlex.quote, command)]),
                  "train_minutes": (time.time() - started) / 60}
        for audio in ("true", "swap", "silent"):                  # `python eval.py ...`, in this process
            with open(out / f"eval-{audio}.log", "w") as f, contextlib.redirect_stdout(f):
                metrics = evaluation.main([str(out / "best.pt"), "--audio", audio, "--out", str(out / f"eval-{audio}"),
                                           "--workers", str(self.args.workers), "--device", self.args.device,
                                           "--overlays", "0", "--worst", "0",
                                           *(["--save-preds"] if audio == "true" else [])])
            record[audio] = {k: metrics[k] for k in ("miou", "fscore", "fg_area", "non_empty")}
        record_path.write_text(json.dumps(record, indent=2))
        self.log(f"{tag} {subset} {name} seed {seed}: mIoU {100 * record['true']['miou']:.2f}  "
                 f"F {100 * record['true']['fscore']:.2f}  swap mIoU {100 * record['swap']['miou']:.2f}  "
                 f"({record['train_minutes']:.1f} min)")
        return record

    def rows(self, table, root, tag, subset, preset_flags, seeds=(0,)):
        return {name: [self.run_row(name, [*preset_flags, *flags], root, tag, subset, seed) for seed in seeds]
                for name, flags in table.items()}


def synthetic_root(args, subset, harder=None):
    """Generate (or reuse) the synthetic set of this subset; `harder` = data.synthesize's extra options."""
    harder = harder or {}
    root = REPO / args.data / ("hard" if harder else "standard")
    marker = root / SUBSET_DIRS[subset] / SYNTH_MARKER
    if not marker.is_file() or marker.read_text() != synthetic_stamp(subset, args.videos, 0, size=96, **harder):
        synthesize(root, subset, videos=args.videos, seed=0, size=96, **harder)
    return root


class Prior(torch.nn.Module):
    """Masks that look at nothing: every pixel, or a centred disc covering a fifth of the frame."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def predict(self, image, audio):
        b, _, h, w = image.shape
        if self.kind == "all foreground":
            return torch.ones(b, 1, h, w)
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5 - h / 2, torch.arange(w) + 0.5 - w / 2, indexing="ij")
        disc = (ys ** 2 + xs ** 2 <= 0.2 * h * w / math.pi).float()
        return disc.expand(b, 1, h, w)


def prior_rows(subset, root, img_size):
    test_set = AVSBench(root, subset, "test", img_size=img_size)
    rows = {}
    for kind in PRIORS:
        result = evaluation.evaluate(Prior(kind), DataLoader(test_set, batch_size=32, collate_fn=collate), "cpu", desc=kind).summary()
        metrics = {k: result[k] for k in ("miou", "fscore", "fg_area", "non_empty")}
        rows[kind] = [{"row": kind, "true": metrics, "swap": metrics, "silent": metrics, "train_minutes": 0.0}]
    return rows


def mean_sd(values, scale=100, digits=2):
    """'m' for one value, 'm ± sd' (sample sd) for several."""
    values = [scale * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows):
    """Markdown: one line per row, mean ± sd over its seeds."""
    lines = ["| row | seeds | mIoU | F-score | mIoU, swapped audio | fg area | fg area, silent | non-empty, silent | "
             "train min |", "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        if any(r is None for r in runs):
            lines.append(f"| {name} | | n/a (no labels) | | | | | | |")
            continue
        col = lambda audio, metric, **kw: mean_sd([r[audio][metric] for r in runs], **kw)
        lines.append(f"| {name} | {len(runs)} | {col('true', 'miou')} | {col('true', 'fscore')} | "
                     f"{col('swap', 'miou')} | {col('true', 'fg_area', digits=1)}% | "
                     f"{col('silent', 'fg_area', digits=1)}% | {col('silent', 'non_empty', digits=0)}% | "
                     f"{mean_sd([r['train_minutes'] for r in runs], scale=1, digits=1)} |")
    return "\n".join(lines)


def grid(rows, headers, path):
    """rows: lists of uint8 (S, S, 3) panels; one header per column."""
    size = rows[0][0].shape[1]
    header = np.concatenate([evaluation.titled(np.zeros((0, size, 3), np.uint8), h) for h in headers], axis=1)
    body = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([header, body], axis=0)).save(path)


def frame_and_gt(dataset, index):
    frame = read_frame(dataset.image_path(index))
    return np.array(frame), load_mask(dataset.mask_path(index), frame.size)[0].numpy() > 0


def figure2(subset, root, folders, path, frames=6):
    """Frame | GT | each method's mask on test frames (first frame of the first videos)."""
    test_set = AVSBench(root, subset, "test")
    rows = []
    for video in test_set.videos[:frames]:
        index = test_set.indices_of(video)[0]
        frame, gt = frame_and_gt(test_set, index)
        panels = [frame, evaluation.highlight(frame, gt)]
        for name in folders:
            pred = Image.open(folders[name] / "eval-true" / "preds" / f"{evaluation.official_key(test_set.keys[index])}.png")
            panels.append(evaluation.highlight(frame, np.array(pred.resize(gt.shape[::-1])) > 127))
        rows.append(panels)
    grid(rows, ["frame", "GT", *folders], path)


@torch.no_grad()
def figure4(subset, root, phase1, path, frames=6):
    """Frame | GT | pseudo mask | class-agnostic map A, on training frames that have GT."""
    ckpt = torch.load(phase1 / "pmr.pt", weights_only=True)
    net = PseudoMaskNet(Config(**{**ckpt["config"], "pretrained": False, "audio_pretrained": False}))
    net.load_state_dict(ckpt["model"])
    net.eval()
    train_set = AVSBench(root, subset, "train", img_size=ckpt["config"]["img_size"])
    rows = []
    for video in train_set.videos[:frames]:
        index = train_set.indices_of(video)[0]
        frame, gt = frame_and_gt(train_set, index)
        pseudo = np.array(Image.open(phase1 / f"{train_set.keys[index]}.png").resize(gt.shape[::-1])) > 127
        activation = class_agnostic_map(net, train_set[index]["image"][None])[1]
        heat = (F.interpolate(activation, size=gt.shape, mode="bilinear")[0, 0].numpy() * 255).astype(np.uint8)
        rows.append([frame, evaluation.highlight(frame, gt), evaluation.highlight(frame, pseudo),
                     np.stack([heat] * 3, axis=-1)])
    grid(rows, ["frame", "GT", "pseudo mask", "C2AM map A"], path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="the real AVSBench folder; default: synthetic sets generated under --data")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="recipe of the Table 1 / Table 2 / Figure 3 rows (default: paper with --root, else small)")
    p.add_argument("--tables", nargs="+", choices=ALL_TABLES,
                   help="default: table1 table2 figure3 with --root, else all")
    p.add_argument("--subsets", nargs="+", default=["s4", "ms3"], choices=["s4", "ms3"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the presets and hard tables")
    p.add_argument("--data", default="data/bench", help="where the synthetic sets are generated")
    p.add_argument("--videos", type=int, default=500, help="videos per synthetic subset (60/20/20 split)")
    p.add_argument("--runs", default="runs/bench", help="where the runs are kept")
    p.add_argument("--device", default=None, help="train.py/eval.py --device (default: cpu on synthetic, else auto)")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes (default: 0 synthetic, else 8)")
    p.add_argument("--extra", default="", help="more train.py flags for every row, e.g. \"--epochs 2\"")
    p.add_argument("--results", default="runs/bench/results", help="where results.md and results.json go")
    p.add_argument("--assets", default="runs/bench/assets", help="where the figures go")
    p.add_argument("--publish", action="store_true",
                   help="write the tables and figures into the committed bench/results/ and assets/ instead")
    args = p.parse_args(argv)
    if args.publish:
        args.results, args.assets = "bench/results", "assets"
    real = args.root is not None
    args.preset = args.preset or ("paper" if real else "small")
    args.tables = args.tables or (["table1", "table2", "figure3"] if real else list(ALL_TABLES))
    args.device = args.device or ("auto" if real else "cpu")
    args.workers = 8 if args.workers is None and real else args.workers or 0
    if real and {"presets", "additions", "hard"} & set(args.tables):
        p.error("--tables presets/additions/hard are synthetic-data studies; leave out --root")
    bench = Bench(args)
    scaled = lambda preset: ["--preset", preset, *([] if real else scale_flags(preset))]
    results, md = {}, [f"Written by `python bench/run.py {' '.join(map(shlex.quote, argv or sys.argv[1:]))}` on "
                       f"{time.strftime('%Y-%m-%d')}. Rows: mean ± sd over seeds where there are several.\n"]
    for subset in args.subsets:
        root, tag = (Path(args.root), "avsbench") if real else (synthetic_root(args, subset), "synthetic")
        img_size = train.parse_args(scaled(args.preset)).cfg.img_size
        results[subset] = {}
        for name, rows in (("table1", TABLE1), ("table2", TABLE2)):
            if name in args.tables:
                results[subset][name] = bench.rows(rows, root, tag, subset, scaled(args.preset))
                if name == "table1":
                    results[subset][name] = {**prior_rows(subset, root, img_size), **results[subset][name]}
        if "figure3" in args.tables and subset == "s4":
            results[subset]["figure3"] = bench.rows(FIGURE3, root, tag, subset, scaled(args.preset))
        if "presets" in args.tables:
            results[subset]["presets"] = {name: runs for p in PRESETS for name, runs in bench.rows(
                {f"WS-AVS, {p} preset": []}, root, tag, subset, scaled(p), args.seeds).items()}
        if "additions" in args.tables:
            results[subset]["additions"] = bench.rows({"small preset": [], **addition_rows()}, root, tag, subset,
                                                      scaled("small"))
        if "hard" in args.tables and subset == "s4":
            hard = synthetic_root(args, subset, HARD)
            results[subset]["hard"] = {**prior_rows(subset, hard, img_size),
                                       **{name: runs for p in PRESETS for name, runs in bench.rows(
                                           {f"WS-AVS, {p} preset": []}, hard, "hard", subset, scaled(p),
                                           args.seeds).items()}}
        for name, rows in results[subset].items():
            md += [f"## {subset.upper()}: {name}\n", table(rows), ""]
        if "table1" in args.tables:
            trained = {n: REPO / runs[0]["out"] for n, runs in results[subset]["table1"].items()
                       if n not in PRIORS and runs[0] is not None}
            figure2(subset, root, trained, REPO / args.assets / f"figure2_{subset}.png")
            figure4(subset, root, REPO / results[subset]["table1"]["WS-AVS"][0]["pseudo_masks"],
                    REPO / args.assets / f"figure4_{subset}.png")
        bench.log(f"{subset} done")
    md.append(f"Total wall time: {(time.time() - bench.started) / 60:.1f} min.")
    results_dir = REPO / args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "results.json").write_text(json.dumps(results, indent=2))
    (results_dir / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    try:
        main()
    except train.ERRORS as e:
        sys.exit(f"error: {error_line(e)}")
