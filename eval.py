"""Evaluate WS-AVS with the official AVSBench metrics (mIoU and F-score, beta^2 = 0.3).

    python eval.py runs/wsavs/best.pt                       # root/subset from the checkpoint, test split
    python eval.py --pred-dir P --root AVSBench --subset s4  # any method's saved 8-bit probability PNGs

    python eval.py runs/wsavs/best.pt --video clip.mp4     # your own clip: masks, contact sheet, overlay video
    python eval.py runs/wsavs/best.pt --frames DIR --audio sound.wav

Metrics are computed at the ground-truth resolution. The F-score depends on how frames are grouped before the
max over thresholds: metrics.json reports it by video (AVSBench's test.py, the headline unless
--fscore-grouping says otherwise), by batches of 4 videos (AVSBench's test.sh) and by frame (the WS-AVS release).
"""
import argparse
import itertools
import json
import shutil
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from data import (AVSS_FRAMES, AVSS_SETS, AVSS, BENCHMARKS, MAP_SIZE, SAMPLE_RATE, S4_CATEGORIES, AVSBench, DataError,
                  LocalisationSet, load_class_mask, png_size, voc_palette, collate, device_name, error_line,
                  frames_clip,
                  image_tensor, log_spectrogram, non_negative_int, positive_int, progress, read_frame,
                  read_png, spectrogram_at, video_clip, writable_folder, write_mask_png)
from wsavs import EZVSL, WSAVS, WSAVSS, CAMNet, Config, PretrainedWeightsError, PseudoMaskNet

BETA2 = 0.3
F_THRESHOLDS = torch.linspace(0, 1 - 1e-10, 255)  # float32, as in the official code (the last rounds to 1.0)


METHODS = ("wsavs", "avs-ws", "cam", "ezvsl", "c2am", "wsavss")  # train.py's --method, described there
# How frames are grouped before the max over thresholds of the F curve (reference.md section 2): by video
# (AVSBench's test.py), by batches of 4 videos = 20 frames in split order (AVSBench's shipped test.sh runs
# test.py with --test_batch_size 4), by frame (the WS-AVS release).
FSCORE_GROUPINGS = ("video", "4-videos", "frame")


class CheckpointError(Exception):
    pass


def build_model(method, cfg, classes=None):
    """The network of a method; wsavss needs the class list (its decoder has one output per class)."""
    if method == "wsavss":
        return WSAVSS(cfg, len(classes))
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

    def groups(self, grouping):
        """Each frame's F-score group: its video, its run of 4 consecutive videos in split order, or itself."""
        if grouping == "video":
            return self.videos
        if grouping == "frame":
            return self.keys
        order = {video: n for n, video in enumerate(dict.fromkeys(self.videos))}
        return [order[video] // 4 for video in self.videos]

    def summary(self, grouping="video"):
        """mIoU; the F-score under each grouping (fscore_by_video, fscore_by_4_videos, fscore_by_frame) and
        `grouping`'s as the headline fscore; areas, counts, per category (F by video)."""
        iou, curves, area = torch.cat(self.iou), torch.cat(self.curves), torch.cat(self.area)
        by = {name: grouped_fscore(curves, self.groups(name)) for name in FSCORE_GROUPINGS}
        result = {"miou": iou.mean().item(), "fscore": by[grouping], "fscore_grouping": grouping,
                  **{f"fscore_by_{name.replace('-', '_')}": value for name, value in by.items()},
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


class SemanticScores:
    """AVSBench-semantic's metrics of argmax class maps (reference.md section 1, as its compute_color_metrics and
    test.py): per class and frame, IoU = inter / (union + eps) and F (beta^2 0.3, at the argmax, NaN -> 0), each
    summed over the frames where the class is in the union and divided by their number. Reported, named:
    miou / fscore: the official mean over all K classes, a class never seen counting 0 (background included);
    *_present: the mean over the classes seen; *_pooled: per class, inter and union (or the F counts) pooled over
    the dataset, then the mean over the classes seen."""

    def __init__(self, num_classes, eps=1e-10):
        self.k, self.eps = num_classes, eps
        self.sums = {name: torch.zeros(num_classes, dtype=torch.float64)
                     for name in ("iou", "f", "frames", "inter", "union", "predicted", "truth")}

    def add(self, pred, gt):
        """pred, gt: class indices (N, H, W), int64."""
        for p, g in zip(pred, gt):
            p, g = F.one_hot(p.flatten(), self.k).bool(), F.one_hot(g.flatten(), self.k).bool()   # (HW, K)
            counts = {"inter": (p & g).sum(0), "union": (p | g).sum(0), "predicted": p.sum(0), "truth": g.sum(0)}
            counts = {name: value.double() for name, value in counts.items()}
            seen = counts["union"] > 0
            self.sums["iou"] += torch.where(seen, counts["inter"] / (counts["union"] + self.eps), 0.0)
            self.sums["f"] += torch.where(seen, self.f_measure(counts), 0.0)
            self.sums["frames"] += seen.double()
            for name, value in counts.items():
                self.sums[name] += value

    def f_measure(self, counts):
        precision = counts["inter"] / (counts["predicted"] + self.eps)
        recall = counts["inter"] / (counts["truth"] + self.eps)
        return ((1 + BETA2) * precision * recall / (BETA2 * precision + recall)).nan_to_num(0.0)

    def summary(self):
        seen = self.sums["frames"] > 0
        per_class = {name: self.sums[name] / self.sums["frames"].clamp_min(1) for name in ("iou", "f")}
        pooled = {"iou": self.sums["inter"] / (self.sums["union"] + self.eps), "f": self.f_measure(self.sums)}
        result = {"protocol": "avss: mean over all classes, unseen classes 0"}
        for name, key in (("iou", "miou"), ("f", "fscore")):
            result[key] = per_class[name].mean().item()
            result[f"{key}_present"] = per_class[name][seen].mean().item() if seen.any() else 0.0
            result[f"{key}_pooled"] = pooled[name][seen].mean().item() if seen.any() else 0.0
        result.update(classes_seen=int(seen.sum()), classes=self.k, per_class_iou=per_class["iou"].tolist())
        return result


def read_class_prediction(path, shape, palette_codes):
    """A saved semantic prediction: an index PNG (8-bit gray or palette: the class number) or an RGB colour PNG in
    the VOC palette -> class indices int64 (H, W)."""
    if not path.is_file():
        raise DataError(f"{path}: missing prediction (expected a class PNG per labelled frame, AVSS's layout)")
    image = read_png(path)
    if image.size[::-1] != tuple(shape):
        raise DataError(f"{path}: prediction is {image.size[0]}x{image.size[1]}, GT mask is {shape[1]}x{shape[0]}")
    if image.mode in ("L", "P"):
        classes = torch.from_numpy(np.asarray(image).astype(np.int64))
        if classes.max() >= len(palette_codes):
            raise DataError(f"{path}: class {int(classes.max())} in the prediction; there are {len(palette_codes)}")
        return classes
    if image.mode != "RGB":
        raise DataError(f"{path}: prediction has image mode {image.mode}; expected class indices (L or P) or RGB "
                        "colours of the palette")
    return load_class_mask(path, image.size, palette_codes)[0]


SEMANTIC_PREDICTIONS = ("wsavss", "decoder", "top_class", "cam")    # WSAVSS.predict_classes: the method, its
                                                                    # decoder alone, two baselines


OFFICIAL_SIZE = 224    # the official AVSS loader resizes frames, and colour masks (NEAREST), to 224 x 224 ...
OFFICIAL_CLIP = 10     # ... and pads 5-frame clips (v1s, v1m) to 10: black frames, zeroed sound, all background


def at_official_size(classes):
    """Class indices (H, W) -> (224, 224) as the official loader resizes the colour mask: PIL's NEAREST, which
    is torch's nearest-exact (pixel centres), then decodes it."""
    size = (OFFICIAL_SIZE, OFFICIAL_SIZE)
    return F.interpolate(classes[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()


@torch.no_grad()
def evaluate_semantic(model, loader, dataset, device, keep_videos=2):
    """A WSAVSS checkpoint's class maps (SEMANTIC_PREDICTIONS) of the AVSS split `dataset` (the loader's frames,
    whatever their sound), each scored with SemanticScores two ways: at the ground truth's own size (nearest),
    and as the official scripts do ("official_loader": frames and masks at 224 x 224, and each 5-frame clip's 5
    padding frames scored too, each the prediction for a zero frame with a zero spectrogram, the analogue of
    their black frame with a zeroed audio feature, against all background; on val and test, where every frame
    is labelled). Returns ({name: summary with "official_loader"}, {key:
    {name: (H, W)}} of the first labelled frame of the first keep_videos videos of each set, for the figure)."""
    model.eval()
    num_classes = len(dataset.classes)
    scores = {name: SemanticScores(num_classes) for name in SEMANTIC_PREDICTIONS}
    official = {} if dataset.split == "train" else {name: SemanticScores(num_classes) for name in SEMANTIC_PREDICTIONS}
    kept, videos, audio_shape = {}, [], None
    for batch in progress(loader, desc="semantic"):
        rows = [i for i, has in enumerate(batch["has_mask"].tolist()) if has]
        if not rows:
            continue
        audio_shape = batch["audio"].shape[1:]
        predictions = model.predict_classes(batch["image"][rows].to(device), batch["audio"][rows].to(device))
        for k, i in enumerate(rows):
            gt = batch["class_mask"][i][0]
            gt_official = at_official_size(gt) if official else None
            first = batch["video"][i] not in videos
            videos += [batch["video"][i]] if first else []
            for name, pred in predictions.items():
                p = F.interpolate(pred[k][None, None].float().cpu(), size=gt.shape, mode="nearest")[0, 0].long()
                scores[name].add(p[None], gt[None])
                if official:
                    official[name].add(at_official_size(pred[k].cpu())[None], gt_official[None])
                avss_set = batch["video"][i].split("/")[0]
                if first and sum(v.split("/")[0] == avss_set for v in videos) <= keep_videos:
                    kept.setdefault(batch["key"][i], {})[name] = p.numpy()
    padding = sum(OFFICIAL_CLIP - AVSS_FRAMES[video.split("/")[0]] for video in dataset.videos)
    if official and padding and audio_shape is not None:
        size = (dataset.img_size, dataset.img_size)
        blank = model.predict_classes(torch.zeros(1, 3, *size, device=device),
                                      torch.zeros(1, *audio_shape, device=device))
        background = torch.zeros(OFFICIAL_SIZE, OFFICIAL_SIZE, dtype=torch.long)
        for name, pred in blank.items():
            pred = at_official_size(pred[0].cpu())
            for _ in range(padding):
                official[name].add(pred[None], background[None])
    results = {name: score.summary() for name, score in scores.items()}
    for name, score in official.items():
        results[name]["official_loader"] = {**score.summary(), "padding_frames": padding,
                                            "protocol": "as the official scripts: 224 x 224, padding frames scored"}
    return results, kept


def save_semantic_figure(dataset, kept, path):
    """One row per kept frame: frame | ground truth | each of SEMANTIC_PREDICTIONS, classes in their palette
    colours, over the dimmed frame."""
    palette = voc_palette(len(dataset.classes))
    rows = []
    for index, item in enumerate(dataset.items):
        if item.key not in kept:
            continue
        frame = np.asarray(read_frame(item.image_path))
        gt = dataset.class_mask(item, frame.shape[1::-1])[0].numpy()
        panels = [frame] + [np.where((m > 0)[..., None], palette[m], frame // 4)
                            for m in (gt, *(kept[item.key][name] for name in SEMANTIC_PREDICTIONS))]
        scale = -(-160 // frame.shape[1])
        row = np.concatenate(panels, axis=1).repeat(scale, axis=0).repeat(scale, axis=1)
        rows.append(titled(row, f"{item.key}  sounding: {item.category_name}"))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    header = titled(np.zeros((0, width, 3), np.uint8), "frame | ground truth | WSAVSS | decoder alone | top class | CAM")
    Image.fromarray(np.concatenate([header, *rows], axis=0)).save(path)


def report_semantic(results, dataset, kept, out_dir):
    """Adds `semantic` to metrics.json, draws semantic.png and prints one line per prediction."""
    metrics = json.loads((out_dir / "metrics.json").read_text())
    metrics["semantic"] = results
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_semantic_figure(dataset, kept, out_dir / "semantic.png")
    for name, r in results.items():
        print(f"  semantic {name:10s} mIoU {100 * r['miou']:6.2f}  F {100 * r['fscore']:6.2f} (official, all "
              f"{r['classes']} classes)   present: mIoU {100 * r['miou_present']:6.2f}  F "
              f"{100 * r['fscore_present']:6.2f}"
              f"   pooled: mIoU {100 * r['miou_pooled']:6.2f}")
        if "official_loader" in r:
            o = r["official_loader"]
            print(f"  {'':19s} as the official loader (224 x 224, {o['padding_frames']} padding frames): mIoU "
                  f"{100 * o['miou']:6.2f}  F {100 * o['fscore']:6.2f}")
    print(f"wrote {out_dir / 'semantic.png'}")


def evaluate_semantic_pred_dir(pred_dir, dataset):
    """Score the class PNGs {label}/{uid}/{frame}.png of every labelled frame of an AVSS split."""
    scores = SemanticScores(len(dataset.classes))
    for index in progress(range(len(dataset)), desc="eval"):
        item = dataset.items[index]
        if item.mask_path is None:
            continue
        gt = dataset.class_mask(item, png_size(item.image_path))[0]
        scores.add(read_class_prediction(Path(pred_dir) / f"{item.key}.png", gt.shape, dataset.palette_codes)[None],
                   gt[None])
    return scores


def format_summary(result):
    others = ", ".join(f"by {name} {100 * result['fscore_by_' + name.replace('-', '_')]:.2f}"
                       for name in FSCORE_GROUPINGS if name != result["fscore_grouping"])
    lines = [f"mIoU {100 * result['miou']:.2f}  F-score {100 * result['fscore']:.2f} (grouped by "
             f"{result['fscore_grouping']}; {others})  [{result['frames']} frames, {result['videos']} videos]",
             f"predicted foreground: {100 * result['fg_area']:.1f}% of the frame on average, "
             f"non-empty in {100 * result['non_empty']:.1f}% of frames"]
    for name, r in result["per_category"].items():
        lines.append(f"  {name:32s} mIoU {100 * r['miou']:6.2f}  F {100 * r['fscore']:6.2f}  ({r['frames']} frames)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running a model

AUDIO_CONTROLS = ("true", "swap", "silent")


class AudioControl(torch.utils.data.Dataset):
    """A split with every frame's audio replaced, to see whether a model listens (and the reviewers'
    off-screen-sound case): 'swap' gives each frame another video's audio (dataset.swap_partners: for AVSBench the
    same second of the next video in the split whose category differs); 'silent' gives all-zero audio."""

    def __init__(self, dataset, mode):
        if mode not in ("swap", "silent"):
            raise ValueError(f"audio control must be swap or silent, got {mode!r}")
        self.dataset, self.mode = dataset, mode
        self.silence = log_spectrogram(np.zeros(5 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE, centre_s=2.5)
        self.partner = dataset.swap_partners() if mode == "swap" else {}   # item index -> index whose audio it gets

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


# ---------------------------------------------------------------------------------------------
# Off-screen sound (SLAVC, Mo & Morgado, NeurIPS 2022): the split's frames with their own sound (sounding pairs)
# and with another video's sound and with silence (non-sounding pairs: whatever the model marks is a false
# positive). Each pair gets a confidence from the predicted map; a detection is right when the pair sounds and
# the predicted mask (prob >= 0.5) has IoU >= 0.5 with the ground truth.

def pair_confidence(prob):
    """SLAVC's confidence of a pair: the mean of the top quarter of the map's values. prob (B, 1, S, S) -> (B,)."""
    flat = prob.flatten(1)
    return flat.topk(flat.shape[1] // 4, dim=1).values.mean(dim=1)


def precision_recall(confidence, iou, sounding, threshold, iou_threshold=0.5):
    """Detections are the pairs with confidence >= threshold: true where the pair sounds and iou >= 0.5, false
    otherwise; a sounding pair not detected is missed. Precision and recall are 1 when undefined (as SLAVC)."""
    detected = confidence >= threshold
    true = (detected & sounding & (iou >= iou_threshold)).sum()
    false = (detected & ~(sounding & (iou >= iou_threshold))).sum()
    missed = (~detected & sounding).sum()
    precision = 1.0 if true + false == 0 else true / (true + false)
    return precision, 1.0 if true + missed == 0 else true / (true + missed)


def offscreen_metrics(confidence, iou, sounding):
    """SLAVC's AP and max-F1 over all pairs. confidence, iou (float) and sounding (bool): arrays of one value per
    pair (iou is read on sounding pairs only). AP: precision and recall at every confidence but the highest,
    in descending order (every n // 200-th for n > 400 pairs), the precision made non-increasing from the right,
    summed over the recall steps (as SLAVC's code: from the recall at the second-highest confidence). max-F1:
    the best F1 at the confidences of every n // 10-th pair in ascending order (SLAVC's ten thresholds)."""
    confidence, iou, sounding = np.asarray(confidence, float), np.asarray(iou, float), np.asarray(sounding, bool)
    n = len(confidence)
    points = [precision_recall(confidence, iou, sounding, t) for t in np.sort(confidence)[:-1][::-max(1, n // 200)]]
    precision, recall = [p for p, _ in points], [r for _, r in points]
    envelope = [max(precision[i:]) for i in range(len(precision))]
    ap = sum(envelope[i] * (recall[i + 1] - recall[i]) for i in range(len(points) - 1))
    f1 = [2 * p * r / (p + r) if p + r > 0 else 0.0
          for p, r in (precision_recall(confidence, iou, sounding, t) for t in np.sort(confidence)[::max(1, n // 10)])]
    return {"ap": float(ap), "max_f1": float(max(f1)), "pairs": n, "sounding_pairs": int(sounding.sum())}


@torch.no_grad()
def evaluate_offscreen(model, dataset, device, batch_size, workers):
    """The split as SLAVC extends it: every frame with a ground-truth mask, with its own sound, another video's
    (AudioControl swap) and silence; returns offscreen_metrics and the counts of each kind."""
    model.eval()
    confidence, iou, sounding = [], [], []
    for audio in AUDIO_CONTROLS:
        inputs = dataset if audio == "true" else AudioControl(dataset, audio)
        for batch in progress(DataLoader(inputs, batch_size=batch_size, num_workers=workers, collate_fn=collate),
                              desc=f"off-screen ({audio} audio)"):
            rows = [i for i, has in enumerate(batch["has_mask"].tolist()) if has]
            if not rows:
                continue
            prob = model.predict(batch["image"][rows].to(device), batch["audio"][rows].to(device)).float().cpu()
            confidence += pair_confidence(prob).tolist()
            for p, i in zip(prob, rows):
                gt = batch["mask"][i][0] > 0.5
                p = F.interpolate(p[None], size=gt.shape, mode="bilinear", align_corners=False)[0, 0] >= 0.5
                iou.append(((p & gt).sum() / (p | gt).sum().clamp_min(1)).item())
                sounding.append(audio == "true" and bool(gt.any()))
    return offscreen_metrics(confidence, iou, sounding)


# ---------------------------------------------------------------------------------------------
# Sound-source localisation benchmarks (--benchmark flickr|vggss), with EZ-VSL's metrics on 224 x 224 maps

def ciou(prob, gt, threshold):
    """Consensus IoU (Senocak et al.; EZ-VSL's code) of a map prob (224, 224) against the box map gt in [0, 1]:
    the pixels with prob >= threshold, P; sum(P * gt) / (sum(gt) + |P outside the boxes|)."""
    pred, gt = (prob >= threshold).double(), gt.double()
    return ((pred * gt).sum() / (gt.sum() + (pred * (gt == 0)).sum())).item()


def top_half_threshold(prob):
    """EZ-VSL's threshold: the value of the median pixel, so that the top half of the pixels is predicted."""
    values = prob.flatten().sort().values
    return values[len(values) // 2]


def localisation_metrics(cious):
    """AP50 (the share of images with cIoU >= 0.5, what papers report as "cIoU"), the AUC of that share over the
    21 thresholds 0, 0.05, ..., 1 (trapezoids), and the mean cIoU."""
    cious = np.asarray(cious, dtype=float)
    shares = [(cious >= 0.05 * i).mean() for i in range(21)]
    auc = sum((shares[i] + shares[i + 1]) / 2 * 0.05 for i in range(20))
    return {"ap50": float((cious >= 0.5).mean()), "auc": float(auc), "mean_ciou": float(cious.mean()),
            "images": len(cious)}


@torch.no_grad()
def evaluate_localisation(model, dataset, device, batch_size, workers, offscreen=False):
    """cIoU of every frame with its own sound (top half of the pixels), summarised by localisation_metrics; with
    offscreen, the set extended as SLAVC extends it (each frame also with the next frame's sound and with
    silence; a detection is right when the pair sounds and the map at >= 0.5 has cIoU >= 0.5)."""
    model.eval()
    cious, pairs = {}, ([], [], [])                              # confidence, cIoU at 0.5, sounding
    for audio in AUDIO_CONTROLS if offscreen else ("true",):
        inputs = dataset if audio == "true" else AudioControl(dataset, audio)
        for batch in progress(DataLoader(inputs, batch_size=batch_size, num_workers=workers), desc=f"{audio} audio"):
            prob = model.predict(batch["image"].to(device), batch["audio"].to(device)).float().cpu()
            prob = F.interpolate(prob, size=(MAP_SIZE, MAP_SIZE), mode="bilinear", align_corners=False)
            for key, p, gt, confidence in zip(batch["key"], prob[:, 0], batch["gt_map"], pair_confidence(prob)):
                if audio == "true":
                    cious[key] = ciou(p, gt, top_half_threshold(p))
                for values, value in zip(pairs, (confidence.item(), ciou(p, gt, 0.5), audio == "true")):
                    values.append(value)
    result = {**localisation_metrics(list(cious.values())), "per_image_ciou": cious}
    if offscreen:
        result["offscreen"] = offscreen_metrics(*pairs)
    return result


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
        model = build_model(ckpt.get("method", "wsavs"), cfg, ckpt.get("classes"))
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
            gt = dataset.gt_foreground(index, pred.shape[::-1])
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
        name = name.replace("/", "_")                           # AVSS videos are named set/uid
        Image.fromarray(np.concatenate([header, columns, *rows], axis=0)).save(out_dir / name)


def report(scores, dataset, out_dir, n_sample, n_worst, about=None, grouping="video"):
    """metrics.json (with `about`: what was scored, and the per-video IoU), overlays, and the printed summary.
    The folder's earlier overlays and predictions are removed first, so it holds this evaluation only."""
    result = scores.summary(grouping)
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


# ---------------------------------------------------------------------------------------------
# Your own clip (--video, or --frames with --audio): probability PNGs, a contact sheet, an overlay video

def clip_samples(clip, fps):
    """(sample index k, the time its 3 s of sound are centred on, RGB frame) of the frames the model sees. fps
    (a Fraction): the frame on screen at (k + 0.5) / fps, for every such time inside the clip (fps 1 on a 5 s
    clip = AVSBench's 5 frames, heard around 0.5 .. 4.5 s); None: every frame, centred on the middle of the
    time it is shown."""
    if fps is None:
        for k, (time, rgb) in enumerate(clip.frames()):
            yield k, time + 0.5 / clip.rate, rgb
        return
    k, shown, end = 0, None, 0.0
    for time, rgb in clip.frames():
        while shown is not None and time > (k + 0.5) / fps:
            yield k, (k + 0.5) / fps, shown
            k += 1
        shown, end = rgb, time + 1 / clip.rate
    while shown is not None and (k + 0.5) / fps < end:
        yield k, (k + 0.5) / fps, shown
        k += 1


def thumbnail(rgb, width=160):
    image = Image.fromarray(rgb)
    return image.resize((width, max(1, round(width * image.height / image.width))), Image.BILINEAR)


@torch.no_grad()
def run_clip(model, clip, fps, out_dir, scratch, batch_size, device):
    """Pass 1: the model on every sample, in batches, each with its 3 s of sound: probs/{k:06d}.png at the frame's
    own size, samples.csv (k, time, predicted foreground share) and a small thumbnail per sample in scratch.
    Returns the rows."""
    size = model.cfg.img_size
    (out_dir / "probs").mkdir(parents=True)
    rows, batch = [], []

    def flush():
        images = torch.stack([image_tensor(Image.fromarray(rgb), size) for _, _, rgb in batch]).to(device)
        audio = torch.stack([spectrogram_at(clip.sound, centre) for _, centre, _ in batch]).to(device)
        prob = model.predict(images, audio).float().cpu()                      # (b, 1, S, S)
        for (k, centre, rgb), p in zip(batch, prob):
            p = F.interpolate(p[None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0]
            write_mask_png(out_dir / "probs" / f"{k:06d}.png", p)
            thumbnail(rgb).save(scratch / f"{k:06d}.png")
            rows.append((k, centre, (p > 0.5).float().mean().item()))
        batch.clear()

    expected = round(len(clip.sound) / SAMPLE_RATE * (fps or clip.rate))
    for sample in progress(clip_samples(clip, fps), desc="frames", total=expected):
        batch.append(sample)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    (out_dir / "samples.csv").write_text("sample,time_s,foreground\n" + "".join(
        f"{k},{centre:.3f},{share:.4f}\n" for k, centre, share in rows))
    return rows


def contact_sheet(rows, out_dir, scratch, count=16, columns=4):
    """Up to `count` samples evenly spread over the clip, each thumbnail with its mask, titled time and share."""
    picked = sorted(set(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int).tolist()))
    cells = []
    for k in picked:
        _, centre, share = rows[k]
        frame = np.asarray(Image.open(scratch / f"{k:06d}.png"))
        mask = np.asarray(Image.open(out_dir / "probs" / f"{k:06d}.png").resize(frame.shape[1::-1])) > 127
        cells.append(titled(highlight(frame, mask), f"{centre:.1f} s  {share:.0%}"))
    height = max(cell.shape[0] for cell in cells)
    cells = [np.pad(cell, ((0, height - cell.shape[0]), (0, 0), (0, 0))) for cell in cells]
    cells += [np.zeros_like(cells[0])] * (-len(cells) % columns)
    grid = [np.concatenate(cells[i:i + columns], axis=1) for i in range(0, len(cells), columns)]
    Image.fromarray(np.concatenate(grid, axis=0)).save(out_dir / "contact_sheet.png")


def overlay_video(clip, fps, count, out_dir):
    """Pass 2: overlay.mp4 at the clip's frame rate (H.264, even size), each frame with the mask of the sample
    it belongs to (with fps, a mask holds for 1 / fps s), and the sound the model heard (AAC, mono 16 kHz)."""
    mask, mask_index = None, None
    with av.open(str(out_dir / "overlay.mp4"), "w") as out:
        video, audio, sent = None, out.add_stream("aac", rate=SAMPLE_RATE, layout="mono"), 0
        for index, (time, rgb) in enumerate(progress(clip.frames(), desc="overlay video")):
            k = index if fps is None else min(int(time * fps), count - 1)
            if k != mask_index:
                mask, mask_index = np.asarray(Image.open(out_dir / "probs" / f"{k:06d}.png")) > 127, k
            height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2                    # yuv420p
            if video is None:
                video = out.add_stream("libx264", rate=clip.rate, options={"crf": "23"})
                video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            shown = highlight(rgb, mask)
            if shown.shape[:2] != (video.height, video.width):                 # frames of other sizes
                shown = np.asarray(Image.fromarray(shown).resize((video.width, video.height), Image.BILINEAR))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(shown), format="rgb24")
            out.mux(video.encode(frame))
            until = min(len(clip.sound), round((time + 1 / clip.rate) * SAMPLE_RATE))   # interleaved sound
            for start in range(sent, until, 1024):
                chunk = av.AudioFrame.from_ndarray(np.asarray(clip.sound[start:min(start + 1024, until)])[None],
                                                   format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
                out.mux(audio.encode(chunk))
            sent = max(sent, until)
        out.mux(video.encode())
        out.mux(audio.encode())


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


def official_key(key):
    """A frame's path in AVSBench's own prediction layout, as its test scripts save masks: the key without its
    split folder (S4 {category}/{video}/{video}_{i}, MS3 {video}/{video}_{i})."""
    return key.split("/", 1)[1]


def evaluate_pred_dir(pred_dir, dataset, keep_predictions):
    """Score saved predictions laid out as AVSBench saves them, or under a folder named after the split (the
    layout of gt_masks): the latter when pred_dir holds a folder of that name."""
    pred_dir = Path(pred_dir)
    name = (lambda key: key) if (pred_dir / dataset.split).is_dir() else official_key
    scores = Scores(keep_predictions)
    for index in progress(range(len(dataset)), desc="eval"):
        if not dataset.has_gt(index):
            continue
        item = dataset.gt_item(index)
        gt = item["mask"][0] > 0.5
        prob = read_prediction(pred_dir / f"{name(item['key'])}.png", gt.shape)
        scores.add(prob[None], gt[None], [item["video"]], [item["category"]], [item["key"]])
    return scores


def fps_value(text):
    """--fps: frames per second as a number or a fraction (30000/1001), or `source` (every frame)."""
    if text == "source":
        return None
    try:
        fps = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number of frames per second or 'source', got {text!r}") from None
    if fps <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return fps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="a checkpoint written by train.py (last.pt / best.pt)")
    p.add_argument("--pred-dir", help="evaluate saved predictions instead of a checkpoint: 8-bit gray PNG "
                   "probability maps (0-255) laid out as AVSBench's test scripts save them (S4 "
                   "{category}/{video}/{video}_{i}.png, MS3 {video}/{video}_{i}.png) or as gt_masks (a split folder "
                   "first)")
    p.add_argument("--root", help="AVSBench folder or a subset folder (default: the checkpoint's)")
    p.add_argument("--subset", choices=["s4", "ms3", "avss"],
                   help="default: the checkpoint's; avss (AVSBench-semantic) scores class predictions (--pred-dir)")
    p.add_argument("--avss-set", default="all", choices=["all", *AVSS_SETS],
                   help="with --subset avss: the videos of one set, or all (default)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to evaluate (default test)")
    p.add_argument("--out", help="output folder (default: eval-<checkpoint name>-<split>[-<audio>-audio] or "
                   "eval-<checkpoint name>-<clip name> beside the checkpoint, or <pred-dir>-eval-<split>); its "
                   "earlier overlays, predictions and clip outputs are removed")
    p.add_argument("--audio", default="true",
                   help="on a split, the listening controls: each frame's own audio (true, default), the audio of a "
                        "video of another category (swap), or all-zero audio (silent). With --frames: the clip's "
                        "sound file (WAV or anything FFmpeg reads)")
    p.add_argument("--video", help="run the model on your own video (any container and codec FFmpeg reads, with "
                   "sound): probability PNGs, contact sheet, overlay video under --out")
    p.add_argument("--frames", help="run the model on a folder of frames (PNG/JPEG, natural name order) taken at "
                   "--fps, with --audio SOUND")
    p.add_argument("--fps", type=fps_value, default=Fraction(1),
                   help="--video: frames per second the model sees (default 1, AVSBench's rate; 'source': every "
                        "frame); --frames: the rate the frames were taken at (default 1)")
    p.add_argument("--sheet", type=positive_int, default=16, help="frames on the clip's contact sheet (default 16)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="frames per forward pass")
    p.add_argument("--workers", type=non_negative_int, default=4, help="data-loading processes")
    p.add_argument("--device", type=device_name, default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--overlays", type=non_negative_int, default=8,
                   help="number of videos drawn as frame|GT|prediction PNGs")
    p.add_argument("--worst", type=non_negative_int, default=8,
                   help="number of lowest-mIoU videos drawn as failure cases, ranked")
    p.add_argument("--save-preds", action="store_true",
                   help="also write predicted probability PNGs under OUT/preds in AVSBench's own prediction layout "
                        "(readable by --pred-dir)")
    p.add_argument("--fscore-grouping", default="video", choices=FSCORE_GROUPINGS,
                   help="the headline F-score's grouping of frames: video (AVSBench's test.py, default), 4-videos "
                        "(its test.sh: batches of 4 videos), frame (the WS-AVS release); metrics.json has all three")
    p.add_argument("--offscreen", action="store_true",
                   help="also score the split extended with non-sounding pairs (each frame with another video's "
                        "sound and with silence): SLAVC's AP and max-F1, in metrics.json under offscreen")
    p.add_argument("--benchmark", choices=BENCHMARKS,
                   help="score sound-source localisation on Flickr-SoundNet's test set (flickr) or VGG-SS (vggss) "
                        "in --root: cIoU / AP50 and AUC, as EZ-VSL (README: the layout)")
    args = p.parse_args(argv)
    clip_mode = args.video or args.frames
    if (args.checkpoint is None) == (args.pred_dir is None):
        p.error("give either a checkpoint or --pred-dir")
    if args.video and args.frames:
        p.error("give --video or --frames, not both")
    if clip_mode and not args.checkpoint:
        p.error("--video and --frames need a checkpoint")
    if args.frames and args.audio in AUDIO_CONTROLS:
        p.error("--frames needs --audio SOUND: the clip's sound file")
    if not args.frames and args.audio not in AUDIO_CONTROLS:
        p.error(f"--audio must be one of {', '.join(AUDIO_CONTROLS)} (a sound file goes with --frames)")
    if args.frames and args.fps is None:
        p.error("--fps source needs --video; with --frames give the rate the frames were taken at")
    if args.offscreen and (args.pred_dir or clip_mode or args.audio != "true"):
        p.error("--offscreen needs a checkpoint, a split or --benchmark, and its own audio")
    if args.pred_dir and args.audio != "true":
        p.error("--audio needs a checkpoint: saved predictions cannot be re-run with other audio")
    if args.pred_dir and not (args.root and args.subset):
        p.error("--pred-dir needs --root and --subset")
    if args.benchmark and not (args.checkpoint and args.root) or args.benchmark and (clip_mode or args.audio != "true"):
        p.error("--benchmark needs a checkpoint and --root (the benchmark's folder), and its own audio")
    if clip_mode:
        return evaluate_clip(args)
    if args.benchmark:
        return evaluate_benchmark(args)
    keep = bool(args.overlays or args.worst or args.save_preds)

    if args.pred_dir:
        if not Path(args.pred_dir).is_dir():
            raise DataError(f"{args.pred_dir}: --pred-dir is not a folder")
        out_dir = writable_folder(args.out or f"{Path(args.pred_dir).resolve()}-eval-{args.split}")
        if args.subset == "avss":
            return evaluate_avss_pred_dir(args, out_dir)
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
        subset = args.subset or ckpt["args"]["subset"]
        if (subset == "avss") != (ckpt.get("method") == "wsavss"):
            p.error("--subset avss goes with a wsavss checkpoint (train.py --subset avss --method wsavss)")
        root = args.root or ckpt["args"]["root"]
        dataset = (AVSS(root, args.split, ckpt["args"].get("avss_set", "all") if args.avss_set == "all" else
                        args.avss_set, img_size=model.cfg.img_size) if subset == "avss" else
                   AVSBench(root, subset, args.split, img_size=model.cfg.img_size))
        dataset.check()
        inputs = dataset if args.audio == "true" else AudioControl(dataset, args.audio)
        loader = DataLoader(inputs, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
        scores = evaluate(model.to(device), loader, device, keep)
        about = {"checkpoint": str(path), "method": ckpt.get("method", "wsavs"), "epoch": ckpt.get("epoch"),
                 "preset": ckpt.get("preset"), "differs": ckpt.get("differs")}
        if args.offscreen:
            about["offscreen"] = evaluate_offscreen(model, dataset, device, args.batch_size, args.workers)
            print(f"off-screen sound (SLAVC): AP {100 * about['offscreen']['ap']:.2f}  max-F1 "
                  f"{100 * about['offscreen']['max_f1']:.2f}  [{about['offscreen']['pairs']} pairs: each frame with "
                  "its own sound, another video's, silence]")
    about.update(root=str(dataset.root), subset=dataset.subset, split=args.split, audio=args.audio)
    if args.save_preds:                                         # report() clears the folder's old preds first
        preds = scores.predictions
    result = report(scores, dataset, out_dir, args.overlays, args.worst, about, args.fscore_grouping)
    if dataset.subset == "avss" and not args.pred_dir:
        semantic, kept = evaluate_semantic(model, loader, dataset, device)
        report_semantic(semantic, dataset, kept, out_dir)
        result["semantic"] = semantic
    if args.save_preds:
        for key, pred in preds.items():
            write_mask_png(out_dir / "preds" / f"{official_key(key)}.png", pred / 255.0)
    return result


def evaluate_avss_pred_dir(args, out_dir):
    """--pred-dir with --subset avss: the semantic metrics, every protocol named, into metrics.json."""
    dataset = AVSS(args.root, args.split, args.avss_set)
    dataset.check()
    result = evaluate_semantic_pred_dir(args.pred_dir, dataset).summary()
    about = {"pred_dir": str(Path(args.pred_dir).resolve()), "root": str(dataset.root), "subset": "avss",
             "avss_set": args.avss_set, "split": args.split}
    (out_dir / "metrics.json").write_text(json.dumps({**about, **result}, indent=2))
    print(f"AVSS {args.avss_set} {args.split}: mIoU {100 * result['miou']:.2f}  F {100 * result['fscore']:.2f} "
          "(official: "
          f"mean over all {result['classes']} classes); over the {result['classes_seen']} classes seen: mIoU "
          f"{100 * result['miou_present']:.2f}  F {100 * result['fscore_present']:.2f}; pooled: mIoU "
          f"{100 * result['miou_pooled']:.2f}  F {100 * result['fscore_pooled']:.2f}\nwrote {out_dir / 'metrics.json'}")
    return result


def evaluate_benchmark(args):
    """--benchmark: the model on a localisation test set; metrics.json beside the checkpoint by default."""
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt, args.checkpoint)
    path = Path(args.checkpoint).resolve()
    out_dir = writable_folder(args.out or path.parent / f"eval-{path.stem}-{args.benchmark}")
    dataset = LocalisationSet(args.root, args.benchmark, img_size=model.cfg.img_size)
    device = pick_device(args.device)
    result = evaluate_localisation(model.to(device), dataset, device, args.batch_size, args.workers, args.offscreen)
    about = {"checkpoint": str(path), "method": ckpt.get("method", "wsavs"), "epoch": ckpt.get("epoch"),
             "benchmark": args.benchmark, "root": str(Path(args.root).resolve()), "annotated": dataset.annotated}
    (out_dir / "metrics.json").write_text(json.dumps({**about, **result}, indent=2))
    print(f"{args.benchmark}: cIoU (AP50) {100 * result['ap50']:.2f}  AUC {100 * result['auc']:.2f}  mean cIoU "
          f"{100 * result['mean_ciou']:.2f}  [{result['images']} frames of {dataset.annotated} annotated]")
    if args.offscreen:
        print(f"extended (off-screen) {args.benchmark}: AP {100 * result['offscreen']['ap']:.2f}  max-F1 "
              f"{100 * result['offscreen']['max_f1']:.2f}  [{result['offscreen']['pairs']} pairs]")
    print(f"wrote {out_dir / 'metrics.json'}")
    return result


def evaluate_clip(args):
    """--video / --frames: the model on your own clip; returns the samples' rows (k, time, foreground share)."""
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt, args.checkpoint)
    source = Path(args.video or args.frames)
    path = Path(args.checkpoint).resolve()
    out_dir = writable_folder(args.out or path.parent / f"eval-{path.stem}-{source.stem}")
    for stale in ("probs", "samples.csv", "contact_sheet.png", "overlay.mp4"):
        target = out_dir / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        clip = (video_clip(source, scratch / "sound.f32") if args.video else
                frames_clip(source, args.audio, args.fps, scratch / "sound.f32"))
        fps = args.fps if args.video else None                   # a folder's frames are all seen
        rows = run_clip(model.to(device).eval(), clip, fps, out_dir, scratch, args.batch_size, device)
        contact_sheet(rows, out_dir, scratch, args.sheet)
        overlay_video(clip, fps, len(rows), out_dir)
    mean = np.mean([share for _, _, share in rows])
    print(f"{source}: {len(rows)} frames at {'every frame' if fps is None else f'{fps} fps'}, predicted "
          f"foreground {100 * mean:.1f}% of the frame on average\nwrote {out_dir / 'probs'}/, samples.csv, "
          f"contact_sheet.png and overlay.mp4 in {out_dir}")
    return rows


if __name__ == "__main__":
    try:
        main()
    except (DataError, CheckpointError, PretrainedWeightsError) as e:
        sys.exit(f"error: {error_line(e)}")
