"""Train WS-AVS (or one of the paper's Table 1 baselines) on AVSBench, without any pixel-level label.

    python train.py --root AVSBench                  # the paper's recipe on single-source (S4)
    python train.py --root AVSBench --subset ms3     # multi-source
    python train.py --root AVSBench --method ezvsl   # a baseline
    python train.py --root AVSBench --subset avss --method wsavss   # semantic masks from video-level labels
    python train.py --demo                           # the small preset on synthetic S4, about 10 minutes on 2 cores

Every recipe setting has a flag and comes from a preset (wsavs.py, PRESETS): --preset paper (default) is the
paper's recipe, --preset small the CPU one with its additions. The run's first line names its preset and every
value that differs from it; the checkpoints and log.jsonl record all of them.

WS-AVS has two phases (wsavs.py, section 5 then 6):
  1. Pseudo mask refinement (PMR, section 3.3): train the C2AM class-agnostic map on the training frames,
     decide its polarity after the first epoch, train the saliency head on the map's cues, and write one
     pseudo mask per training frame under --pseudo-masks (reused by any run with the same phase-1 recipe).
  2. WS-AVS: M2ICL + BCE against the pseudo masks (Eq. 8); validation mIoU/F after every epoch,
     <out>/last.pt and <out>/best.pt, one JSON line per epoch in <out>/log.jsonl.
The run ends with the test split evaluated with best.pt (as eval.py does).

Several GPUs: torchrun --nproc_per_node N train.py ... (gloo on CPU, nccl on GPU; torchrun's --nnodes,
--node_rank and --rdzv_endpoint for several machines). --batch-size is per process, and the M2ICL and C2AM
negatives come from every process, so N processes with batch b train like one with batch N b. Every process
runs both phases on its share of the frames and writes its share of the pseudo masks; rank 0 validates and
writes checkpoints and logs. A process that fails stops every process within seconds, with its error line.

--method picks the network and loss (paper section 4.2):
  wsavs   the method above; --no-avf / --no-pmr drop either loss (Table 2), --fusion-stages k fuses and
          contrasts only the last k stages (Figure 3)
  avs-ws  AVSBench's model (the same encoders, fusion and decoder) trained with its audio-visual matching
          loss only, since its BCE needs pixel labels: KL(audio embedding || mask-pooled visual map)
  cam     a frame classifier on the video's category label (S4 only: MS3 has no labels); mask = the top
          class's activation map, normalised
  ezvsl   audio and visual encoders trained with the multiple-instance contrastive loss on the last
          stage; mask = the audio-visual cosine map, normalised
  c2am    phase 1 alone; mask = the Eq. 6 pseudo mask of the frame (class-agnostic map + saliency)
  wsavss  semantic masks on AVSBench-semantic (--subset avss) from its video-level labels (wsavs.py section 8):
          phase 1 as wsavs, then WS-AVS with a per-class decoder, two classifiers of the video's labels and
          M2ICL per class
"""
import argparse
import datetime
import json
import os
import random
import sys
import threading
import time
from dataclasses import asdict, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler, Subset

import eval as evaluation
from data import (AVSS_SETS, SPLITS, SUBSET_DIRS, SYNTH_MARKER, AVSS, AVSBench, DataError, checked, collate, device_name,
                  error_line, non_negative_int, positive_int, progress, synthesize, synthetic_stamp,
                  writable_folder, write_mask_png)
from wsavs import (CHOICES, PMR_FIELDS, PMR_VERSION, PRESETS, RANGES, Config, PretrainedWeightsError, PseudoMaskNet,
                   border_activation, c2am_step_loss, check_range, decide_polarity, differences, m2icl_loss,
                   preset_config, pseudo_masks, saliency_step_loss, wsavs_loss, wsavss_loss)

DEMO = dict(root="data/demo-avsbench", out="runs/demo", workers=0, preset="small", overwrite=True)
# The demo trains the WS-AVS row of bench/run.py on S4: many videos seen once (with 60 training videos seen
# five times the decoder learns each video's sounding object from the frame and ignores the audio).
DEMO_VIDEOS, DEMO_SIZE = 500, 96

# One flag per Config field (every default lives in wsavs.Config / PRESETS): help text, and choices if any.
CONFIG_FLAGS = {
    "backbone": ("audio and visual ResNet", ["resnet50", "resnet18"]),
    "pretrained": ("ImageNet weights for the visual encoder; --no-pretrained also turns off the audio encoder's "
                   "unless --audio-pretrained is given", None),
    "audio_pretrained": ("ImageNet weights for the audio ResNet (stem summed to one channel)", None),
    "audio_stem_stride": ("stride of the audio ResNet's first conv: 2 is the standard ResNet, 4 about 4x cheaper", None),
    "audio_norm": ("LayerNorm before the audio projection", None),
    "projection_dropout": ("Dropout in the per-stage visual projections (WS-AVS and EZ-VSL)", None),
    "dim": ("audio-visual embedding size D", None),
    "decoder_dim": ("channels of the Panoptic-FPN decoder and of the saliency head", None),
    "img_size": ("frames are resized to this square size", None),
    "fusion_stages": ("fuse audio into, and apply M2ICL to, the last k visual stages (Figure 3)", [1, 2, 3, 4]),
    "tau": ("M2ICL temperature", None),
    "avf_weight": ("weight of the M2ICL loss in Eq. 8 (the release's code scales it by tau)", None),
    "mask_same_video": ("leave frames of the same video out of the M2ICL negatives", None),
    "pmr_epochs": ("epochs of each phase-1 step: the C2AM map, then the saliency head", None),
    "c2am_self_pairs": ("C2AM's SimMax includes each sample's pair with itself, as CCAM's code does", None),
    "equivariance": ("weight of the C2AM zoom/flip equivariance loss; 0 = plain C2AM, no warped copies", None),
    "channel_shuffle": ("random RGB channel order per frame while training C2AM (the map is then applied as "
                        "its mean over the 6 orders)", None),
    "cue_threshold": ("normalised class-agnostic activation from which a pixel is a foreground cue for the "
                      "saliency head", None),
    "crf_iterations": ("mean-field iterations of the dense CRF that refines the saliency head's cues; 0 = none",
                       None),
    "class_avf_weight": ("--method wsavss: weight of M2ICL per class (0: off)", None),
    "class_evidence": ("--method wsavss: where a class is, for its pseudo labels: its CAM, or CAM + the map of the "
                       "sound's evidence for it", None),
    "pseudo_gate": ("none: train on the Eq. 6 pseudo masks; audio / objects: keep their pixels / their connected "
                    "components where the sound's M2ICL map points", None),
    "augment": ("training frames: crop-flip (resize 1.1x, random crop, flip) or flip", None),
    "epochs": ("WS-AVS training epochs", None),
    "batch_size": ("frames per batch and process; also the M2ICL negatives", None),
    "lr": ("Adam learning rate (both phases)", None),
}


class TrainingError(Exception):
    pass


def add_config_flags(p):
    """--field-name for every Config field, default None (= the preset's value), the presets' values in the help."""
    group = p.add_argument_group("recipe (default: the --preset's value; `paper` / `small` shown)")
    for field in fields(Config):
        text, choices = CONFIG_FLAGS[field.name]
        choices = choices or CHOICES.get(field.name)
        flag = "--" + field.name.replace("_", "-")
        values = " / ".join(str(getattr(PRESETS[name], field.name)) for name in PRESETS)
        if field.type in (bool, "bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=f"{text} [{values}]")
        else:
            kind = {"int": int, "float": float, "str": str}.get(field.type, field.type)
            if field.name in RANGES and choices is None:
                kind = checked(kind, partial(check_range, field.name))
            group.add_argument(flag, type=kind, choices=choices, help=f"{text} [{values}]")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper", choices=list(PRESETS),
                   help="paper (default): the paper's recipe, ResNet-50, 224 px, batch 64, 20 epochs; small: random "
                        "init on a CPU, 96 px, with the additions that regime needs (README: table of choices)")
    p.add_argument("--method", default="wsavs", choices=evaluation.METHODS,
                   help="wsavs (default), a Table 1 baseline: avs-ws, cam, ezvsl, c2am, or wsavss with --subset avss "
                        "(see above)")
    p.add_argument("--root", default="AVSBench", help="the AVSBench folder (holding Single-source/ and "
                   "Multi-sources/) or one subset folder (default: AVSBench)")
    p.add_argument("--subset", default="s4", choices=["s4", "ms3", "avss"],
                   help="single-source (s4), multi-source (ms3), or AVSBench-semantic (avss, with --method wsavss)")
    p.add_argument("--avss-set", default="all", choices=["all", *AVSS_SETS],
                   help="with --subset avss: train and score on the videos of one set, or all (default)")
    p.add_argument("--out", default="runs/wsavs", help="output folder: checkpoints, log.jsonl, eval-test/")
    p.add_argument("--pseudo-masks", help="folder of the phase-1 pseudo masks and pmr.pt, reused by any run with the "
                   "same phase-1 recipe (default: <out>/pseudo_masks)")
    p.add_argument("--no-avf", dest="avf", action="store_false", help="wsavs without M2ICL (Table 2 ablation)")
    p.add_argument("--no-pmr", dest="pmr", action="store_false",
                   help="wsavs without pseudo masks; the decoder is trained by avs-ws's matching loss (Table 2)")
    add_config_flags(p)
    p.add_argument("--device", type=device_name, default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=non_negative_int, default=4, help="data-loading processes")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    p.add_argument("--init", metavar="CKPT",
                   help="start phase 2 from this checkpoint's weights, e.g. an S4 run's best.pt for MS3 (AVSBench's "
                        "'pretrained on S4'); it must have this method and architecture. --resume takes precedence")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>/last.pt where it stopped, mid-epoch included (a fresh start if absent)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out (or --pseudo-masks) folder that holds another run, replacing it")
    p.add_argument("--check-data", action="store_true",
                   help="only check every file of the three splits (opened, headers and masks validated), then exit")
    p.add_argument("--save-every", type=non_negative_int, default=0,
                   help="also write <out>/last.pt every N training steps (default 0: at epoch ends only)")
    p.add_argument("--log-every", type=positive_int, default=50,
                   help="read the running losses off the device every N steps: the progress bar's loss and the "
                        "non-finite check (the only per-step host synchronisation; default 50)")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                   help="mixed precision: bf16 (CUDA or CPU) or fp16 (CUDA, with loss scaling); default off")
    p.add_argument("--demo", action="store_true",
                   help=f"the small preset on a synthetic S4 set in {DEMO['root']} (written if absent), on the CPU "
                        "in a few minutes; explicit flags still override")
    if argv is None:
        argv = sys.argv[1:]
    if "--demo" in argv:
        p.set_defaults(**DEMO)
    args = p.parse_args(argv)
    if args.pretrained is False and args.audio_pretrained is None:
        args.audio_pretrained = False
    overrides = {f.name: getattr(args, f.name) for f in fields(Config) if getattr(args, f.name) is not None}
    try:
        args.cfg = preset_config(args.preset, **overrides)
    except ValueError as e:
        p.error(str(e))
    if args.method != "wsavs" and not (args.avf and args.pmr and args.fusion_stages in (None, 4)):
        p.error("--no-avf, --no-pmr and --fusion-stages apply to --method wsavs only")
    if (args.method == "wsavss") != (args.subset == "avss"):
        p.error("--subset avss trains --method wsavss, which needs AVSS's class labels")
    if args.method == "cam" and args.subset != "s4":
        p.error("--method cam needs the S4 category labels; AVSBench MS3 has none")
    if args.amp == "fp16" and not (torch.cuda.is_available() and args.device != "cpu"):
        p.error("--amp fp16 needs CUDA; use --amp bf16 on a CPU")
    if args.method == "avs-ws":                                  # = wsavs with neither AVF nor PMR (Table 2 row 1)
        args.avf = args.pmr = False
    return args


def recipe_line(args):
    """The run's first line: its preset and every recipe value that differs from it."""
    changed = differences(args.cfg, args.preset)
    listed = ", ".join(f"{name}={value}" for name, value in changed.items()) or "none"
    return f"preset {args.preset}; differs from it: {listed}"


def open_split(args, split, **kw):
    """A split of the chosen data: AVSBench S4 / MS3, or AVSBench-semantic (one set or all)."""
    if args.subset == "avss":
        return AVSS(args.root, split, args.avss_set, **kw)
    return AVSBench(args.root, args.subset, split, **kw)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loader(dataset, batch_size, workers):
    """In order, for evaluation and writing pseudo masks."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)


class EpochBatches(Sampler):
    """This process's batches of one epoch (set_epoch): DistributedSampler's shard of the (seed, epoch)
    permutation, cut into batches, the first `skip` left out (a resumed epoch). Step k of all ranks together is
    the batch a single process with batch N b would see. Each item goes out as (index, seed, epoch), the key of
    its augmentation, so workers kept alive between epochs need no word of the epoch."""

    def __init__(self, dataset, batch_size, seed, rank=0, world=1):
        self.sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.batch_size, self.seed, self.drop_last = batch_size, seed, len(dataset) // world >= batch_size
        self.set_epoch(0)

    def set_epoch(self, epoch, skip=0):
        self.sampler.set_epoch(epoch)
        self.batches = [[(index, self.seed, epoch) for index in batch]
                        for batch in BatchSampler(self.sampler, self.batch_size, self.drop_last)][skip:]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def train_loader(dataset, batch_size, workers, seed, rank=0, world=1, pin_memory=False):
    """Training batches, epoch after epoch (loader.batch_sampler.set_epoch(epoch, skip) before each), from
    workers kept alive between epochs; if the items carry sound, every clip is decoded once, before the workers
    start, into a cache they share. The loader draws its workers' seed from a generator of its own: from torch's
    global one it would shift the dropout masks that follow, and a resumed epoch would no longer replay the
    interrupted one."""
    if dataset.with_audio:
        dataset.cache_audio(show_progress=rank == 0)
    return DataLoader(dataset, batch_sampler=EpochBatches(dataset, batch_size, seed, rank, world),
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=pin_memory,
                      collate_fn=collate, generator=torch.Generator().manual_seed(seed))


def setup_distributed(device_name):
    """(rank, world size, device, FailTogether or None). torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; a plain
    run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, evaluation.pick_device(device_name), None
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    # Errors stop every process through FailTogether; the timeout only bounds a process that hangs. The longest
    # wait is the other ranks' while rank 0 validates or saves.
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return dist.get_rank(), world, device, FailTogether(dist.distributed_c10d._get_default_store())


class FailTogether:
    """Fail fast across processes. The first process to fail posts its error line in the rendezvous store; a
    thread in every process polls the store and, seeing a line posted by another, prints it and exits 1 at once:
    this process may be blocked in a collective waiting for the failed one, which only the process-group timeout
    would end."""
    KEY = "wsavs/error"

    def __init__(self, store, interval=0.5):
        self.store, self.interval, self.failed_here = store, interval, threading.Event()
        threading.Thread(target=self.watch, daemon=True).start()

    def watch(self):
        try:
            while not self.store.check([self.KEY]):
                time.sleep(self.interval)
        except Exception:                                        # the store's host has ended: so has the run
            return
        if not self.failed_here.is_set():
            sys.stdout.flush()
            print(f"error: {self.store.get(self.KEY).decode()}", file=sys.stderr, flush=True)
            os._exit(1)

    def post(self, line):
        """This process failed with `line`: returns the line every process prints (the first posted), once the
        others' watchers have had the time to print it."""
        self.failed_here.set()
        first = self.store.compare_set(self.KEY, "", line).decode()
        time.sleep(3 * self.interval)
        return first


class AllGather(torch.autograd.Function):
    """Concatenate x over ranks; the backward pass sums the gradient over ranks (all-reduce: gloo has no
    reduce-scatter) and hands each rank the slice of its own rows."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rows = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * rows:(dist.get_rank() + 1) * rows]


def gather_across_ranks(x):
    """(x of every rank concatenated in rank order, where this rank's rows start), with gradients."""
    return AllGather.apply(x), dist.get_rank() * len(x)


def average_gradients(parameters, world):
    """Data parallelism by hand for phase 1, whose steps call the network's parts rather than one forward that
    DistributedDataParallel could wrap: the mean gradient over processes, one all-reduce of them all flattened."""
    if world == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    for grad, mean in zip(grads, (flat / world).split([g.numel() for g in grads])):
        grad.copy_(mean.view_as(grad))


def broadcast_buffers(module, world):
    """Rank 0's BatchNorm statistics to every process (without SyncBatchNorm each rank's follow its own batches)."""
    for buffer in module.buffers() if world > 1 else ():
        dist.broadcast(buffer, 0)


def save_atomic(obj, path):
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def model_only(ckpt):
    """best.pt: last.pt without what only resuming needs (optimizer, scaler, generators, log)."""
    return {k: v for k, v in ckpt.items() if k not in ("optimizer", "scaler", "rng", "totals", "log")}


def write_log(out, records):
    """log.jsonl, rewritten whole (temp file + rename) from the records last.pt holds."""
    tmp = out / "log.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, out / "log.jsonl")


NEVER = 2 ** 62


class RunningSums:
    """A training loop's loss sums and its first non-finite step, kept on the device: reading them (check,
    means) is the loop's only host synchronisation, every --log-every steps, before each checkpoint and at the
    epoch's end, on every process at the same steps (they reduce over processes)."""

    def __init__(self, what, device, world, sums=None, steps=0):
        self.what, self.world, self.steps = what, world, steps
        self.sums = {name: torch.tensor(value, device=device) for name, value in (sums or {}).items()}
        self.first_bad = torch.tensor(NEVER, device=device)

    def add(self, step, loss, parts):
        self.first_bad = torch.minimum(self.first_bad, torch.where(torch.isfinite(loss.detach()), NEVER, step))
        for name, value in {"loss": loss, **parts}.items():
            self.sums[name] = self.sums.get(name, 0) + value.detach().float()
        self.steps += 1

    def check(self):
        """TrainingError naming the first step whose loss was not finite on any process."""
        first_bad = self.first_bad.clone()
        if self.world > 1:
            dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
        if first_bad.item() < NEVER:
            raise TrainingError(f"non-finite {self.what} loss at step {first_bad.item()}; the last good checkpoint "
                                "is kept")

    def floats(self):
        """The sums as numbers (checkpoints hold them, for a resumed epoch's means)."""
        return {name: value.item() for name, value in self.sums.items()}

    def means(self):
        """{name: mean over the steps so far and over processes}, after check()."""
        self.check()
        values = torch.stack(list(self.sums.values())) / max(1, self.steps)
        if self.world > 1:
            dist.all_reduce(values)
            values = values / self.world
        return dict(zip(self.sums, values.tolist()))

    def log(self, step, bar, every):
        """Every `every` steps: the non-finite check, and the running mean loss on the progress bar."""
        if (step + 1) % every == 0:
            self.check()
            bar.set_postfix(loss=f"{self.sums['loss'].item() / max(1, self.steps):.3f}", refresh=False)


# ---------------------------------------------------------------------------------------------
# Phase 1: pseudo mask refinement

def pmr_recipe(args, cfg):
    """What phase 1's pseudo masks depend on: a later run with the same recipe reuses them."""
    return {"version": PMR_VERSION, "root": str(Path(args.root).resolve()), "subset": args.subset,
            "avss_set": args.avss_set, "seed": args.seed,
            "config": {name: getattr(cfg, name) for name in PMR_FIELDS}}


def train_pmr(args, cfg, device, out, rank=0, world=1):
    """Phase 1 (wsavs.py section 5) on every process, each on its share of the frames: returns the folder of
    pseudo masks (one 8-bit PNG per training frame, named by item key) and pmr.pt."""
    pseudo_dir = Path(args.pseudo_masks) if args.pseudo_masks else out / "pseudo_masks"
    recipe = pmr_recipe(args, cfg)
    done = pseudo_dir / "done.json"
    if done.is_file() and json.loads(done.read_text()) == recipe:
        if rank == 0:
            print(f"PMR: reusing pseudo masks in {pseudo_dir} (delete the folder to regenerate)")
        return pseudo_dir

    train_set = open_split(args, "train", img_size=cfg.img_size, augment=cfg.augment, audio=False)  # frames only
    net = PseudoMaskNet(cfg).to(device)
    if world > 1 and device.type == "cuda":                      # batch statistics over all N b frames
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    seed_everything(args.seed + rank)                            # each process draws its own warps and orders
    gather = gather_across_ranks if world > 1 else None
    batches = train_loader(train_set, cfg.batch_size, args.workers, args.seed, rank, world, device.type == "cuda")

    def train_step(step, loss, parts, optimizer, parameters, sums, bar):
        sums.add(step, loss, parts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(parameters, world)
        optimizer.step()
        sums.log(step, bar, args.log_every)

    # 1a. C2AM: contrast foreground and background features (of every process's frames); polarity decided
    # after the first epoch
    parameters = list(net.visual_encoder.parameters()) + list(net.activation_head.parameters())
    optimizer = torch.optim.Adam(parameters, lr=cfg.lr)
    for epoch in range(cfg.pmr_epochs):
        net.train()
        batches.batch_sampler.set_epoch(epoch)
        sums = RunningSums("C2AM", device, world)
        bar = progress(batches, desc=f"PMR C2AM {epoch + 1}/{cfg.pmr_epochs}", disable=rank != 0)
        for step, batch in enumerate(bar):
            image = batch["image"].to(device, non_blocking=True)      # (B, 3, S, S)
            loss, activation = c2am_step_loss(net, image, gather)
            border = border_activation(activation, image.shape[-2:])
            train_step(step, loss, {"border": border}, optimizer, parameters, sums, bar)
        means = sums.means()
        if epoch == 0:
            decide_polarity(net, means["border"])
        if rank == 0:
            print(f"PMR C2AM epoch {epoch + 1}/{cfg.pmr_epochs}  loss {means['loss']:.4f}  border activation "
                  f"{means['border']:.3f}  polarity {'flipped' if net.flip_polarity else 'kept'}")
    broadcast_buffers(net, world)

    # 1b. saliency head trained on the class-agnostic map's cues, encoder and map frozen
    parameters = list(net.saliency_head.parameters())
    optimizer = torch.optim.Adam(parameters, lr=cfg.lr)
    for epoch in range(cfg.pmr_epochs):
        batches.batch_sampler.set_epoch(epoch)
        sums = RunningSums("saliency", device, world)
        bar = progress(batches, desc=f"PMR saliency {epoch + 1}/{cfg.pmr_epochs}", disable=rank != 0)
        for step, batch in enumerate(bar):
            loss = saliency_step_loss(net, batch["image"].to(device, non_blocking=True))
            train_step(step, loss, {}, optimizer, parameters, sums, bar)
        means = sums.means()
        if rank == 0:
            print(f"PMR saliency epoch {epoch + 1}/{cfg.pmr_epochs}  loss {means['loss']:.4f}")
    broadcast_buffers(net, world)

    # 1c. Eq. 6 pseudo masks for every training frame, each process its share; their agreement with the
    # training GT is printed as a diagnostic only (it is never used for training)
    net.eval()
    pseudo_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_atomic({"model": net.state_dict(), "config": asdict(cfg)}, pseudo_dir / "pmr.pt")
    plain_set = open_split(args, "train", img_size=cfg.img_size, audio=False)
    share = Subset(plain_set, range(rank, len(plain_set), world))
    scores = evaluation.Scores()
    for batch in progress(loader(share, cfg.batch_size, args.workers), desc="PMR pseudo masks", disable=rank != 0):
        pseudo = pseudo_masks(net, batch["image"].to(device)).cpu()        # (B, 1, S, S)
        for key, mask in zip(batch["key"], pseudo):
            write_mask_png(pseudo_dir / f"{key}.png", mask[0].numpy())
        rows = [i for i, has in enumerate(batch["has_mask"].tolist()) if has]
        if rows:
            evaluation.score_batch(scores, pseudo[rows], batch, rows, mode="nearest")
    if world > 1:                                                # also: every share is written past this point
        shares = [None] * world
        dist.all_gather_object(shares, scores)
        scores = evaluation.Scores.merged(shares)
    if rank == 0:
        result = scores.summary()
        print(f"PMR: wrote {len(plain_set)} pseudo masks to {pseudo_dir}; against the training GT (diagnostic): "
              f"mIoU {100 * result['miou']:.2f}  F {100 * result['fscore']:.2f}")
        done.write_text(json.dumps(recipe))
    return pseudo_dir


# ---------------------------------------------------------------------------------------------
# Phase 2: WS-AVS, or a baseline's whole training

def batch_loss(args, cfg, model, batch, video_ids, device, gather):
    """(loss, {part: value}) of one batch for the chosen method."""
    image = batch["image"].to(device, non_blocking=True)
    if args.method == "cam":
        loss = F.cross_entropy(model(image)["class_logits"], batch["category"].to(device, non_blocking=True))
        return loss, {"cls": loss.detach()}
    out = model(image, batch["audio"].to(device, non_blocking=True))
    if args.method == "ezvsl":
        loss = m2icl_loss(out["audio_embed"], out["visual_maps"], video_ids, cfg.tau, gather, cfg.mask_same_video)
        return loss, {"avf": loss.detach()}
    pseudo_mask = batch["pseudo_mask"].to(device, non_blocking=True) if args.pmr else None
    if args.method == "wsavss":
        return wsavss_loss(out, pseudo_mask, batch["labels"].to(device, non_blocking=True), video_ids, cfg, gather)
    return wsavs_loss(out, pseudo_mask, video_ids, cfg, avf=args.avf, pmr=args.pmr, gather=gather)


def rng_state():
    """Torch's generators: the only ones phase 2 draws from (augmentation is keyed by seed, epoch and index)."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def train_network(args, cfg, device, out, pseudo_dir, rank=0, world=1):
    train_set = open_split(args, "train", img_size=cfg.img_size, augment=cfg.augment, pseudo_mask_dir=pseudo_dir)
    val_set = open_split(args, "val", img_size=cfg.img_size)
    video_index = {v: i for i, v in enumerate(train_set.videos)}
    torch.manual_seed(args.seed + 1)                             # same weights whether or not phase 1 ran now
    model = evaluation.build_model(args.method, cfg, getattr(train_set, "classes", None)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    start_epoch, start_step, best_miou, best_epoch, totals = 0, 0, -1.0, 0, {}
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()] if rank == 0 else []
    if args.init:                                                # checked by check_outputs before any work
        model.load_state_dict(evaluation.load_checkpoint(args.init, map_location=device)["model"])
    if args.resume and (out / "last.pt").is_file():
        ckpt = evaluation.load_checkpoint(out / "last.pt", map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, start_step, totals = ckpt["epoch"], ckpt["step"], ckpt["totals"]
        best_miou, best_epoch = ckpt["best_miou"], ckpt["best_epoch"]
        set_rng_state(ckpt["rng"])
        log = ckpt["log"] + log[-1:]                             # the epochs last.pt holds, then this start
        best_path = out / "best.pt"
        if rank == 0 and 0 < best_epoch == start_epoch and start_step == 0 and (
                not best_path.is_file() or evaluation.load_checkpoint(best_path)["epoch"] != best_epoch):
            save_atomic(model_only(ckpt), best_path)                 # killed between last.pt and best.pt
        if rank == 0:
            print(f"resumed from {out / 'last.pt'}: epoch {start_epoch + 1}, step {start_step}")
    elif args.resume and rank == 0:
        print(f"--resume: no {out / 'last.pt'} yet, starting from the beginning")
    if world > 1:
        if device.type == "cuda":                                # batch statistics over all N b frames
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # EZ-VSL leaves the projections of stages 1-3 unused
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=args.method == "ezvsl")
    network = model.module if world > 1 else model
    gather = gather_across_ranks if world > 1 else None
    autocast = torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp),
                              enabled=args.amp != "off")

    def checkpoint(epoch, step, sums, val=None):
        """Rank 0 writes last.pt (temp file + rename): after `step` batches of epoch `epoch` (0-based), with the
        log records up to there, from which --resume rewrites log.jsonl (and best.pt if a kill came between).
        Every process has checked that no loss so far was non-finite (sums.check or sums.means)."""
        if rank == 0:
            ckpt = {"method": args.method, "model": network.state_dict(), **run_record(args),
                    "classes": getattr(train_set, "classes", None),
                    "epoch": epoch, "step": step, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "best_miou": best_miou, "best_epoch": best_epoch, "totals": sums.floats(), "rng": rng_state(),
                    "val": val, "log": [r for r in log if "epoch" not in r or r["epoch"] <= epoch]}
            save_atomic(ckpt, out / "last.pt")
            return ckpt

    if rank == 0:
        write_log(out, log)

    batches = train_loader(train_set, cfg.batch_size, args.workers, args.seed + 1000, rank, world,
                           device.type == "cuda")
    for epoch in range(start_epoch, cfg.epochs):
        started = time.time()
        model.train()
        skip = start_step if epoch == start_epoch else 0
        batches.batch_sampler.set_epoch(epoch, skip)
        steps = skip + len(batches)
        sums = RunningSums(args.method, device, world, totals if skip else None, skip)
        bar = progress(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", initial=skip, total=steps, disable=rank != 0)
        for step, batch in enumerate(bar, start=skip):
            video_ids = torch.tensor([video_index[v] for v in batch["video"]]).to(device, non_blocking=True)
            with autocast:
                loss, parts = batch_loss(args, cfg, model, batch, video_ids, device, gather)
            sums.add(epoch * steps + step, loss, parts)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            sums.log(step, bar, args.log_every)
            if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < steps:
                sums.check()
                checkpoint(epoch, step + 1, sums)
        totals = sums.means()                                    # the log shows the mean over processes
        if rank == 0:
            val = evaluation.evaluate(network, loader(val_set, cfg.batch_size, args.workers), device,
                                      desc="val").summary()
            best = val["miou"] > best_miou
            if best:
                best_miou, best_epoch = val["miou"], epoch + 1
            log.append({"epoch": epoch + 1, **totals, "val_miou": val["miou"], "val_fscore": val["fscore"],
                        "seconds": round(time.time() - started, 1)})
            ckpt = checkpoint(epoch + 1, 0, sums, {"miou": val["miou"], "fscore": val["fscore"]})
            if best:
                save_atomic(model_only(ckpt), out / "best.pt")
            write_log(out, log)
            parts = ", ".join(f"{k} {v:.4f}" for k, v in totals.items() if k != "loss")
            print(f"epoch {epoch + 1}/{cfg.epochs}  loss {totals['loss']:.4f} ({parts})  val mIoU "
                  f"{100 * val['miou']:.2f}  F {100 * val['fscore']:.2f}{'  *best*' if best else ''}  "
                  f"{log[-1]['seconds']:.0f}s")
        if world > 1:
            dist.barrier()
    return network


def c2am_checkpoint(args, cfg, device, out, pseudo_dir):
    """The c2am baseline has no phase 2: its checkpoint is phase 1's network, scored once on val."""
    net = PseudoMaskNet(cfg).to(device)
    net.load_state_dict(torch.load(pseudo_dir / "pmr.pt", map_location=device, weights_only=True)["model"])
    val_set = open_split(args, "val", img_size=cfg.img_size)
    val = evaluation.evaluate(net, loader(val_set, cfg.batch_size, args.workers), device, desc="val").summary()
    ckpt = {"method": "c2am", "model": net.state_dict(), **run_record(args), "epoch": cfg.pmr_epochs, "val": {"miou": val["miou"], "fscore": val["fscore"]}}
    save_atomic(ckpt, out / "last.pt")
    save_atomic(ckpt, out / "best.pt")
    print(f"c2am: val mIoU {100 * val['miou']:.2f}  F {100 * val['fscore']:.2f}")
    return net


def run_record(args):
    """The run's settings as saved in checkpoints and log.jsonl: preset, what differs from it, the whole Config,
    and the other flags."""
    recipe = {f.name for f in fields(Config)} | {"cfg"}
    return {"preset": args.preset, "differs": differences(args.cfg, args.preset), "config": asdict(args.cfg),
            "args": {k: v for k, v in vars(args).items() if k not in recipe}}


# ---------------------------------------------------------------------------------------------
# Checks before any work: outputs, resume / init, data

ARCHITECTURE_FIELDS = ("backbone", "audio_stem_stride", "audio_norm", "dim", "decoder_dim", "fusion_stages")
RESUME_ARGS = ("method", "subset", "avss_set", "root", "seed", "avf", "pmr", "amp")     # besides the Config, but epochs


def listed(changes):
    return ", ".join(f"{name} {then} -> {now}" for name, (then, now) in changes.items())


def check_outputs(args, out):
    """Refuse, before any work, what would overwrite another run or continue a different one: a fresh run in a
    folder holding a run (without --overwrite), a --resume whose settings differ from last.pt's, an --init
    checkpoint of another method or architecture, a --pseudo-masks folder of another phase-1 recipe."""
    last = out / "last.pt"
    if args.resume and last.is_file():
        ckpt = evaluation.load_checkpoint(last)
        now = {**asdict(args.cfg), **{k: getattr(args, k) for k in RESUME_ARGS}}
        then = {**ckpt["config"], **ckpt["args"], "method": ckpt.get("method")}
        changed = {k: (then.get(k), v) for k, v in now.items() if k != "epochs" and then.get(k) != v}
        if changed:
            raise evaluation.CheckpointError(
                f"{last}: --resume with other settings than the run's ({listed(changed)}); "
                "only --epochs may change: use the run's flags, or another --out")
        if not {"optimizer", "log", "best_epoch"} <= set(ckpt):
            raise evaluation.CheckpointError(f"{last}: cannot be resumed (written by an older train.py, or by the "
                                             "c2am baseline); start afresh with --overwrite")
    elif args.overwrite:
        for name in ("last.pt", "best.pt", "log.jsonl"):
            (out / name).unlink(missing_ok=True)
    elif last.is_file() or (out / "best.pt").is_file():
        raise evaluation.CheckpointError(f"{out}: holds a run already (last.pt); --resume continues it, --overwrite "
                                         "replaces it, or choose another --out")
    if args.init and not (args.resume and last.is_file()):
        ckpt = evaluation.load_checkpoint(args.init)
        changed = {k: (ckpt["config"].get(k), getattr(args.cfg, k)) for k in ARCHITECTURE_FIELDS
                   if ckpt["config"].get(k) != getattr(args.cfg, k)}
        if ckpt.get("method") != args.method:
            changed = {"method": (ckpt.get("method"), args.method), **changed}
        if changed:
            raise evaluation.CheckpointError(f"{args.init}: --init needs a checkpoint of this method and "
                                             f"architecture ({listed(changed)})")
    pseudo_dir = Path(args.pseudo_masks) if args.pseudo_masks else out / "pseudo_masks"
    done = pseudo_dir / "done.json"
    if not args.overwrite and done.is_file() and args.method in ("wsavs", "c2am") and args.pmr:
        then, now = json.loads(done.read_text()), pmr_recipe(args, args.cfg)
        changed = {k: (then.get(k), v) for k, v in now.items() if k != "config" and then.get(k) != v}
        changed.update({k: (then.get("config", {}).get(k), v) for k, v in now["config"].items()
                        if then.get("config", {}).get(k) != v})
        if changed:
            raise DataError(f"{pseudo_dir}: holds the pseudo masks of another phase-1 recipe ({listed(changed)}); "
                            "--overwrite replaces them, or choose another --pseudo-masks")


def check_data(args, rank=0, world=1):
    """Every file of the three splits opened and validated (data.AVSBench.check), each process its share."""
    started = time.time()
    videos = {}
    for split in SPLITS:
        dataset = open_split(args, split)
        dataset.check(show_progress=rank == 0, rank=rank, world=world)
        videos[split] = len(dataset.videos)
    if rank == 0:
        print(f"data: {args.subset} train/val/test {videos['train']}/{videos['val']}/{videos['test']} videos in "
              f"{dataset.root}, every file checked in {time.time() - started:.1f}s")


ERRORS = (DataError, evaluation.CheckpointError, PretrainedWeightsError, TrainingError)


def main(argv=None):
    args = parse_args(argv)
    rank, world, device, fail_together = setup_distributed(args.device)
    try:
        run(args, rank, world, device)
    except Exception as e:
        if world > 1:                                  # every process stops with the first failed one's line
            known = isinstance(e, ERRORS)
            line = fail_together.post(error_line(e) if known else f"rank {rank}: {type(e).__name__}: {e}")
            if known:
                raise TrainingError(line) from None
        raise
    finally:
        if world > 1:
            dist.destroy_process_group()


def run(args, rank, world, device):
    started = time.time()
    if rank == 0:
        print(f"{recipe_line(args)}\nmethod {args.method}, {args.subset}, seed {args.seed}")
    marker = Path(args.root) / SUBSET_DIRS["s4"] / SYNTH_MARKER
    stale = marker.is_file() and marker.read_text() != synthetic_stamp("s4", DEMO_VIDEOS, 0, size=DEMO_SIZE)
    if rank == 0 and args.demo and (stale or not (marker.parent / "s4_meta_data.csv").is_file()):
        print(f"demo: writing a synthetic S4 set of {DEMO_VIDEOS} videos to {args.root}")
        synthesize(args.root, "s4", videos=DEMO_VIDEOS, seed=0, size=DEMO_SIZE)
    if world > 1:
        dist.barrier()
    args.root = str(Path(args.root).resolve())                # checkpoints work from any folder
    if args.check_data:
        check_data(args, rank, world)
        return
    out = writable_folder(args.out)
    if args.pseudo_masks:
        writable_folder(args.pseudo_masks, "--pseudo-masks")
    if rank == 0:
        check_outputs(args, out)
    check_data(args, rank, world)                              # bad data fails now, not after hours
    cfg = args.cfg
    if rank == 0:
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps({"start": time.strftime("%Y-%m-%d %H:%M:%S"), "method": args.method,
                                **run_record(args)}) + "\n")
    seed_everything(args.seed)

    needs_pmr = args.method in ("c2am", "wsavss") or (args.method == "wsavs" and args.pmr)
    pseudo_dir = None
    if needs_pmr:
        pseudo_dir = train_pmr(args, cfg, device, out, rank, world)
    if args.method == "c2am":
        if rank == 0:
            model = c2am_checkpoint(args, cfg, device, out, pseudo_dir)
    else:
        model = train_network(args, cfg, device, out, pseudo_dir, rank, world)

    if rank == 0:
        best = evaluation.load_checkpoint(out / "best.pt", map_location=device)
        model.load_state_dict(best["model"])
        test_set = open_split(args, "test", img_size=cfg.img_size)
        scores = evaluation.evaluate(model, loader(test_set, cfg.batch_size, args.workers), device,
                                     keep_predictions=True, desc="test")
        print(f"test (best.pt, epoch {best['epoch']}):")
        about = {"checkpoint": str((out / "best.pt").resolve()), "method": args.method, "epoch": best["epoch"],
                 "preset": args.preset, "differs": differences(cfg, args.preset), "root": args.root,
                 "subset": args.subset, "split": "test", "audio": "true"}
        evaluation.report(scores, test_set, out / "eval-best-test", n_sample=8, n_worst=8, about=about)
        if args.method == "wsavss":
            semantic, kept = evaluation.evaluate_semantic(model, loader(test_set, cfg.batch_size, args.workers),
                                                          test_set, device)
            evaluation.report_semantic(semantic, test_set, kept, out / "eval-best-test")
        print(f"done in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    try:
        main()
    except ERRORS as e:
        sys.exit(f"error: {error_line(e)}")
