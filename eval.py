"""Evaluate WS-AVS with the official AVSBench metrics (mIoU and F-score, beta^2 = 0.3).

    python eval.py runs/wsavs/best.pt                       # root/subset from the checkpoint, test split
    python eval.py --pred-dir P --root AVSBench --subset s4  # any method's saved 8-bit probability PNGs

Metrics are computed at the ground-truth resolution. The F-score headline groups frames by video, as
AVSBench does (the WS-AVS release grouped by single frame; that number is reported too, named).
"""
import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from data import (SAMPLE_RATE, S4_CATEGORIES, AVSBench, DataError, collate, device_name, error_line, load_mask,
                  log_spectrogram, non_negative_int, positive_int, progress, read_frame, read_png, writable_folder,
                  write_mask_png)
from wsavs import EZVSL, WSAVS, CAMNet, Config, PretrainedWeightsError, PseudoMaskNet

BETA2 = 0.3
F_THRESHOLDS = torch.linspace(0, 1 - 1e-10, 255)  # float32, as in the official code (the last rounds to 1.0)


METHODS = ("wsavs", "avs-ws", "cam", "ezvsl", "c2am")  # train.py's --method, described there


class CheckpointError(Exception):
    pass


def build_model(method, cfg):
    if method == "cam":
        return CAMNet(cfg, num_classes=len(S4_CATEGORIES))
    if method == "ezvsl":
        return EZVSL(cfg)
    if method == "c2am":
        return PseudoMaskNet(cfg)
    return WSAVS(cfg)                                           # wsavs and avs-ws


# ---------------------------------------------------------------------------------------------
# Metrics (reference.md section 2)

def frame_iou(prob, gt):
    """prob (N, H, W) in [0, 1], gt (N, H, W) bool -> (N,) IoU of prob > 0.5; an empty GT scores the
    fraction of pixels predicted background."""
    pred = prob > 0.5
    inter = (pred & gt).sum(dim=(1, 2)).double()
    union = (pred | gt).sum(dim=(1, 2)).double()
    empty = gt.sum(dim=(1, 2)) == 0
    true_negative = (~pred & ~gt).sum(dim=(1, 2)).double()
    pixels = gt.shape[1] * gt.shape[2]
    inter = torch.where(empty, true_negative, inter)
    union = torch.where(empty, torch.full_like(union, pixels), union)
    return inter / union.clamp_min(1)


def frame_f_curves(prob, gt):
    """(N, 255) F-measure of prob >= t at each threshold t; NaN rows for frames with an empty GT
    (they are skipped). Counts come from a histogram of how many thresholds each pixel passes, which
    gives the same numbers as thresholding 255 times."""
    n = prob.shape[0]
    passed = torch.searchsorted(F_THRESHOLDS, prob.reshape(n, -1).float().contiguous(), right=True)  # (N, HW) in 0..255
    positives = gt.reshape(n, -1).double()
    hist_all = torch.zeros(n, 256, dtype=torch.float64).scatter_add_(1, passed, torch.ones_like(positives))
    hist_pos = torch.zeros(n, 256, dtype=torch.float64).scatter_add_(1, passed, positives)
    # pixels predicted positive at threshold k are those that passed more than k thresholds
    predicted = hist_all.flip(1).cumsum(1).flip(1)[:, 1:]       # (N, 255)
    true_pos = hist_pos.flip(1).cumsum(1).flip(1)[:, 1:]        # (N, 255)
    gt_pos = positives.sum(1, keepdim=True)
    precision = true_pos / (predicted + 1e-20)
    recall = true_pos / (gt_pos + 1e-20)
    f = ((1 + BETA2) * precision * recall / (BETA2 * precision + recall)).nan_to_num(0.0)
    return torch.where(gt_pos > 0, f, torch.full_like(f, float("nan")))


def grouped_fscore(curves, groups):
    """Mean over groups of (max over thresholds of the group's mean F curve); a group whose frames
    all have empty GT contributes 0."""
    scores = []
    for g in dict.fromkeys(groups):
        rows = curves[[i for i, x in enumerate(groups) if x == g]]
        valid = rows[~rows[:, 0].isnan()]
        scores.append(valid.mean(0).max().item() if len(valid) else 0.0)
    return float(np.mean(scores)) if scores else 0.0


class Scores:
    """Per-frame IoU and F curves, accumulated over a split, then summarised."""

    def __init__(self, keep_predictions=False):
        self.iou, self.curves, self.videos, self.categories, self.keys = [], [], [], [], []
        self.area = []                                          # predicted foreground fraction per frame
        self.predictions = {} if keep_predictions else None     # key -> uint8 (H, W)

    def add(self, prob, gt, videos, categories, keys):
        self.iou.append(frame_iou(prob, gt))
        self.area.append((prob > 0.5).float().mean(dim=(1, 2)))
        self.curves.append(frame_f_curves(prob, gt))
        self.videos += list(videos)
        self.categories += [int(c) for c in categories]
        self.keys += list(keys)
        if self.predictions is not None:
            for key, p in zip(keys, prob):
                self.predictions[key] = (p * 255).round().to(torch.uint8).numpy()

    @classmethod
    def merged(cls, parts):
        """One Scores holding the frames of several (the shares of several processes)."""
        whole = cls(keep_predictions=any(part.predictions is not None for part in parts))
        for part in parts:
            for name in ("iou", "curves", "videos", "categories", "keys", "area"):
                getattr(whole, name).extend(getattr(part, name))
            if part.predictions is not None:
                whole.predictions.update(part.predictions)
        return whole

    def video_iou(self):
        iou = torch.cat(self.iou)
        per_video = {}
        for v, x in zip(self.videos, iou.tolist()):
            per_video.setdefault(v, []).append(x)
        return {v: float(np.mean(xs)) for v, xs in per_video.items()}

    def summary(self):
        iou, curves, area = torch.cat(self.iou), torch.cat(self.curves), torch.cat(self.area)
        result = {"miou": iou.mean().item(), "fscore": grouped_fscore(curves, self.videos),
                  "fscore_grouping": "video", "fscore_per_frame": grouped_fscore(curves, self.keys),
                  "fg_area": area.mean().item(), "non_empty": (area > 0).float().mean().item(),
                  "frames": len(self.keys), "videos": len(set(self.videos)), "per_category": {}}
        for c in sorted(set(self.categories)):
            if c < 0:
                continue
            rows = [i for i, x in enumerate(self.categories) if x == c]
            result["per_category"][S4_CATEGORIES[c]] = {
                "miou": iou[rows].mean().item(),
                "fscore": grouped_fscore(curves[rows], [self.videos[i] for i in rows]), "frames": len(rows)}
        return result


def format_summary(result):
    lines = [f"mIoU {100 * result['miou']:.2f}  F-score {100 * result['fscore']:.2f} (grouped by video; "
             f"per-frame grouping {100 * result['fscore_per_frame']:.2f})  "
             f"[{result['frames']} frames, {result['videos']} videos]",
             f"predicted foreground: {100 * result['fg_area']:.1f}% of the frame on average, "
             f"non-empty in {100 * result['non_empty']:.1f}% of frames"]
    for name, r in result["per_category"].items():
        lines.append(f"  {name:32s} mIoU {100 * r['miou']:6.2f}  F {100 * r['fscore']:6.2f}  ({r['frames']} frames)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running a model

class AudioControl(torch.utils.data.Dataset):
    """A split with every frame's audio replaced, to see whether a model listens (and the reviewers'
    off-screen-sound case): 'swap' gives each frame the audio of the same second of the next video in the
    split whose category differs (MS3 has no categories: simply the next video); 'silent' gives all-zero audio."""

    def __init__(self, dataset, mode):
        if mode not in ("swap", "silent"):
            raise ValueError(f"audio control must be swap or silent, got {mode!r}")
        self.dataset, self.mode = dataset, mode
        self.silence = log_spectrogram(np.zeros(5 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE, centre_s=2.5)
        category = {item.video: item.category for item in dataset.items}
        videos = dataset.videos
        self.partner = {}                                       # item index -> index whose audio it gets
        for k, video in enumerate(videos):
            others = [videos[(k + j) % len(videos)] for j in range(1, len(videos))]
            partners = [v for v in others if category[v] < 0 or category[v] != category[video]]
            if mode == "swap" and not partners:
                raise DataError(f"{dataset.root}: --audio swap needs videos of two categories in the split")
            if partners:
                for mine, theirs in zip(dataset.indices_of(video), dataset.indices_of(partners[0])):
                    self.partner[mine] = theirs

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        item["audio"] = self.silence if self.mode == "silent" else self.dataset.audio(self.partner[index])
        return item


def score_batch(scores, prob, batch, rows, mode="bilinear"):
    """Add predictions prob (len(rows), 1, S, S) of the batch's frames `rows` to scores, in order, each resized to
    its own GT mask's size (frames of one batch may differ in size: runs of one size are resized together)."""
    size_of = lambda k: tuple(batch["mask"][rows[k]].shape[-2:])
    for size, run in itertools.groupby(range(len(rows)), key=size_of):
        ks = list(run)
        picked = [rows[k] for k in ks]
        corners = {} if mode == "nearest" else {"align_corners": False}
        p = F.interpolate(prob[ks].float(), size=size, mode=mode, **corners)
        gt = torch.stack([batch["mask"][i][0] for i in picked]) > 0.5          # (b, H, W) at GT resolution
        scores.add(p[:, 0].cpu(), gt, [batch["video"][i] for i in picked],
                   [int(batch["category"][i]) for i in picked], [batch["key"][i] for i in picked])


@torch.no_grad()
def evaluate(model, loader, device, keep_predictions=False, desc="eval"):
    model.eval()
    scores = Scores(keep_predictions)
    for batch in progress(loader, desc=desc):
        rows = [i for i, has in enumerate(batch["has_mask"].tolist()) if has]   # S4 train frames 2-5: no GT
        if rows:
            prob = model.predict(batch["image"][rows].to(device), batch["audio"][rows].to(device))  # (b, 1, S, S)
            score_batch(scores, prob, batch, rows)
    return scores


def load_checkpoint(path, map_location="cpu"):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not {"model", "config", "args"} <= set(ckpt):
        raise CheckpointError(f"{path}: not a wsavs checkpoint (expected keys model, config, args)")
    return ckpt


def model_from_checkpoint(ckpt, path):
    try:
        cfg = Config(**{**ckpt["config"], "pretrained": False, "audio_pretrained": False})  # weights come next
        model = build_model(ckpt.get("method", "wsavs"), cfg)
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: saved with another architecture ({str(e).splitlines()[0][:200]})") from None
    return model


def pick_device(name):
    """A torch.device for a --device value (already checked by data.device_name)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)


# ---------------------------------------------------------------------------------------------
# Pictures: one row per frame of a video (frame | ground truth | prediction), titled

TITLE_HEIGHT = 14


def highlight(frame, mask):
    """The frame with everything outside the mask dimmed, so any object colour stays visible."""
    out = frame.copy()
    out[~mask] = out[~mask] // 4
    return out


def titled(panel, text):
    """panel (H, W, 3) uint8 under a strip of text."""
    strip = Image.new("RGB", (panel.shape[1], TITLE_HEIGHT))
    ImageDraw.Draw(strip).text((2, 1), text, fill=(255, 255, 255))
    return np.concatenate([np.asarray(strip), panel], axis=0)


def save_overlays(dataset, scores, videos, out_dir, ranked=False, min_width=160):
    """One PNG per video: a title (video, category, video mIoU), column titles, then per scored frame a line
    with its IoU over frame | ground truth | prediction. Small frames are enlarged (nearest) to min_width px.
    `ranked` prefixes the file names with the rank (worst first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame_iou = dict(zip(scores.keys, torch.cat(scores.iou).tolist()))
    video_iou = scores.video_iou()
    for rank, video in enumerate(videos, start=1):
        rows = []
        for index in dataset.indices_of(video):
            pred = scores.predictions.get(dataset.keys[index])
            if pred is None:                                    # no GT, not scored (S4 train frames 2-5)
                continue
            frame = np.array(read_frame(dataset.image_path(index)).resize(pred.shape[::-1]))
            gt = load_mask(dataset.mask_path(index), pred.shape[::-1])[0].numpy() > 0
            panels = np.concatenate([frame, highlight(frame, gt), highlight(frame, pred > 127)], axis=1)
            scale = -(-min_width // frame.shape[1])
            panels = panels.repeat(scale, axis=0).repeat(scale, axis=1)
            rows.append(titled(panels, f"frame {dataset.items[index].frame}: IoU {frame_iou[dataset.keys[index]]:.3f}"))
        width = rows[0].shape[1]
        category = dataset.items[dataset.indices_of(video)[0]].category_name
        header = titled(np.zeros((0, width, 3), np.uint8), f"{video}{f'  {category}' if category else ''}  "
                        f"mIoU {video_iou[video]:.3f}")
        columns = np.concatenate([titled(np.zeros((0, width // 3, 3), np.uint8), title)
                                  for title in ("frame", "ground truth", "prediction")], axis=1)
        name = f"{rank:03d}_{video}.png" if ranked else f"{video}.png"
        Image.fromarray(np.concatenate([header, columns, *rows], axis=0)).save(out_dir / name)


def report(scores, dataset, out_dir, n_sample, n_worst, about=None):
    """metrics.json (with `about`: what was scored, and the per-video IoU), overlays, and the printed summary.
    The folder's earlier overlays and predictions are removed first, so it holds this evaluation only."""
    result = scores.summary()
    result["per_video_iou"] = scores.video_iou()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("overlays", "preds"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    (out_dir / "metrics.json").write_text(json.dumps({**(about or {}), **result}, indent=2))
    if scores.predictions is not None and (n_sample or n_worst):
        video_iou = result["per_video_iou"]
        save_overlays(dataset, scores, list(video_iou)[:n_sample], out_dir / "overlays" / "sample")
        worst = sorted(video_iou, key=video_iou.get)[:n_worst]
        save_overlays(dataset, scores, worst, out_dir / "overlays" / "worst", ranked=True)
    print(format_summary(result))
    print(f"wrote {out_dir / 'metrics.json'}" + (f" and overlays under {out_dir / 'overlays'}" if n_sample or n_worst else ""))
    return result


def read_prediction(path, shape):
    """A saved prediction: an 8-bit gray PNG of probabilities scaled to 0..255 -> float32 (H, W) in [0, 1]."""
    if not path.is_file():
        raise DataError(f"{path}: missing prediction (expected an 8-bit PNG per GT mask, same tree and names)")
    image = read_png(path)
    if image.mode != "L":
        raise DataError(f"{path}: prediction has image mode {image.mode}; expected 8-bit gray (L), probabilities "
                        "scaled to 0..255")
    values = np.asarray(image)
    if values.max() == 1:
        raise DataError(f"{path}: prediction holds only 0 and 1; expected probabilities scaled to 0..255 "
                        "(a binary mask as 0 and 255)")
    if values.shape != tuple(shape):
        raise DataError(f"{path}: prediction is {values.shape[1]}x{values.shape[0]}, GT mask is {shape[1]}x{shape[0]}")
    return torch.from_numpy(values.astype(np.float32) / 255.0)


def evaluate_pred_dir(pred_dir, dataset, keep_predictions):
    scores = Scores(keep_predictions)
    for index in progress(range(len(dataset)), desc="eval"):
        if not dataset.has_gt(index):
            continue
        item = dataset.gt_item(index)
        gt = item["mask"][0] > 0.5
        prob = read_prediction(Path(pred_dir) / f"{item['key']}.png", gt.shape)
        scores.add(prob[None], gt[None], [item["video"]], [item["category"]], [item["key"]])
    return scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="a checkpoint written by train.py (last.pt / best.pt)")
    p.add_argument("--pred-dir", help="evaluate saved predictions instead of a checkpoint: 8-bit gray PNG "
                   "probability maps (0-255) in the same tree and names as gt_masks")
    p.add_argument("--root", help="AVSBench folder or a subset folder (default: the checkpoint's)")
    p.add_argument("--subset", choices=["s4", "ms3"], help="default: the checkpoint's")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to evaluate (default test)")
    p.add_argument("--out", help="output folder for metrics.json and overlays (default: eval-<checkpoint name>-"
                   "<split>[-<audio>-audio] beside the checkpoint, or <pred-dir>-eval-<split>); its earlier "
                   "overlays and predictions are removed")
    p.add_argument("--audio", default="true", choices=["true", "swap", "silent"],
                   help="listening controls: each frame's own audio (default), the audio of a video of another "
                        "category (swap), or all-zero audio (silent)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="frames per forward pass")
    p.add_argument("--workers", type=non_negative_int, default=4, help="data-loading processes")
    p.add_argument("--device", type=device_name, default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--overlays", type=non_negative_int, default=8,
                   help="number of videos drawn as frame|GT|prediction PNGs")
    p.add_argument("--worst", type=non_negative_int, default=8,
                   help="number of lowest-mIoU videos drawn as failure cases, ranked")
    p.add_argument("--save-preds", action="store_true",
                   help="also write predicted probability PNGs under OUT/preds (readable by --pred-dir)")
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.pred_dir is None):
        p.error("give either a checkpoint or --pred-dir")
    if args.pred_dir and args.audio != "true":
        p.error("--audio needs a checkpoint: saved predictions cannot be re-run with other audio")
    if args.pred_dir and not (args.root and args.subset):
        p.error("--pred-dir needs --root and --subset")
    keep = bool(args.overlays or args.worst or args.save_preds)

    if args.pred_dir:
        if not Path(args.pred_dir).is_dir():
            raise DataError(f"{args.pred_dir}: --pred-dir is not a folder")
        out_dir = writable_folder(args.out or f"{Path(args.pred_dir).resolve()}-eval-{args.split}")
        dataset = AVSBench(args.root, args.subset, args.split)
        dataset.check()
        scores = evaluate_pred_dir(args.pred_dir, dataset, keep)
        about = {"pred_dir": str(Path(args.pred_dir).resolve())}
    else:
        ckpt = load_checkpoint(args.checkpoint)
        model = model_from_checkpoint(ckpt, args.checkpoint)
        path, suffix = Path(args.checkpoint).resolve(), "" if args.audio == "true" else f"-{args.audio}-audio"
        out_dir = writable_folder(args.out or path.parent / f"eval-{path.stem}-{args.split}{suffix}")
        device = pick_device(args.device)
        dataset = AVSBench(args.root or ckpt["args"]["root"], args.subset or ckpt["args"]["subset"], args.split,
                           img_size=model.cfg.img_size)
        dataset.check()
        inputs = dataset if args.audio == "true" else AudioControl(dataset, args.audio)
        loader = DataLoader(inputs, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
        scores = evaluate(model.to(device), loader, device, keep)
        about = {"checkpoint": str(path), "method": ckpt.get("method", "wsavs"), "epoch": ckpt.get("epoch"),
                 "preset": ckpt.get("preset"), "differs": ckpt.get("differs")}
    about.update(root=str(dataset.root), subset=dataset.subset, split=args.split, audio=args.audio)
    if args.save_preds:                                         # report() clears the folder's old preds first
        preds = scores.predictions
    result = report(scores, dataset, out_dir, args.overlays, args.worst, about)
    if args.save_preds:
        for key, pred in preds.items():
            write_mask_png(out_dir / "preds" / f"{key}.png", pred / 255.0)
    return result


if __name__ == "__main__":
    try:
        main()
    except (DataError, CheckpointError, PretrainedWeightsError) as e:
        sys.exit(f"error: {error_line(e)}")
