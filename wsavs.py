"""WS-AVS: Weakly-Supervised Audio-Visual Segmentation (Mo & Raj, NeurIPS 2023), in one file.

Read top to bottom, it follows section 3 of the paper:
  1. encoders: global audio embedding a_i and multi-scale visual maps v_i^s   (section 3.1)
  2. audio-visual fusion z_i^s                                                (Eq. 1)
  3. Panoptic-FPN semantic-head decoder -> mask logits M                      (section 3.1)
  4. multi-scale multiple-instance contrastive loss, M2ICL                    (Eq. 3-5)
  5. pseudo mask refinement (phase 1): one step of C2AM, one step of the
     saliency head, the pseudo masks of a batch                              (section 3.3, Eq. 6)
  6. the training losses (phase 2), with the optional audio gate             (Eq. 7-8)
  7. the Table 1 baselines that need their own network: CAM, EZ-VSL           (section 4.2)
  8. semantic segmentation (AVSS) from video-level labels: WSAVSS              (PCAS, our design)
Shapes: B batch, D embedding dim, S input size, h x w a stage's spatial size.
Config holds every setting; PRESETS["paper"] is the paper's recipe, PRESETS["small"] the CPU one with its additions.
"""
from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import IMAGENET_MEAN, IMAGENET_STD
from kernels import maxsim


@dataclass(frozen=True)
class Config:
    """Every setting of a run, model and recipe. The defaults are the `paper` preset: the paper's text; where it is
    silent, the public release's choice (CCAM's for C2AM); the README's table of choices gives each row's source."""
    # model (section 3.1 and 4.1)
    backbone: str = "resnet50"          # audio and visual ResNet (resnet18 for small runs)
    pretrained: bool = True             # ImageNet weights for the visual encoder (paper 4.1)
    audio_pretrained: bool = True       # ImageNet weights for the audio ResNet too, stem summed to 1 channel (release)
    audio_stem_stride: int = 2          # stride of the audio ResNet's first conv: 2 = standard ResNet
    audio_norm: bool = True             # LayerNorm before the audio projection (release)
    projection_dropout: float = 0.9     # Dropout in the visual projections, LayerNorm -> Dropout -> Linear (release)
    dim: int = 512                      # D, the shared audio-visual embedding size (release)
    decoder_dim: int = 128              # channels of the Panoptic-FPN decoder and the saliency head
    img_size: int = 224                 # frames are resized to this square size (paper 4.1)
    fusion_stages: int = 4              # the last k stages get Eq. 1 fusion and M2ICL (paper Figure 3: 1..4)
    # M2ICL, Eq. 3-5
    tau: float = 0.03                   # temperature (release)
    avf_weight: float = 1.0             # weight of L_avf in Eq. 8 (paper: 1; the release's loss is scaled by tau)
    mask_same_video: bool = False       # drop frames of the same video from the negatives (paper: every other item)
    # pseudo mask refinement, section 3.3 (C2AM: CCAM's code where the paper is silent)
    pmr_epochs: int = 10                # epochs of the C2AM map, then of the saliency head (CCAM: 10)
    c2am_self_pairs: bool = True        # SimMax includes each sample's pair with itself (CCAM)
    equivariance: float = 0.0           # weight of the zoom/flip equivariance loss; 0 = plain C2AM, no warped copies
    channel_shuffle: bool = False       # random RGB channel order per frame while training C2AM
    cue_threshold: float = 0.3          # normalised class-agnostic activation from which a pixel is a foreground cue (CCAM)
    crf_iterations: int = 10            # mean-field iterations of the dense CRF on the cues; 0 = none (CCAM: 10)
    pseudo_gate: str = "none"           # none: Eq. 6 masks as they are; audio / objects: their pixels / connected
                                        # components kept where the sound's M2ICL map points
    # semantic masks (AVSS, section 8; our design)
    class_avf_weight: float = 1.0       # weight of M2ICL per class (0: off)
    class_evidence: str = "cam"         # where a class is, for its pseudo labels: its CAM, or CAM + its sound map
    # optimisation (paper 4.1)
    augment: str = "crop-flip"          # training frames: crop-flip (resize 1.1x, random crop, flip; release) or flip
    epochs: int = 20
    batch_size: int = 64                # per process; also the M2ICL negatives
    lr: float = 1e-4                    # Adam


# The `small` preset: random init on a CPU, 96 px, one pass over many synthetic videos (bench/ and --demo).
# Each of its additions is what that regime needed; bench/run.py measures each one removed.
PRESETS = {
    "paper": Config(),
    "small": Config(backbone="resnet18", pretrained=False, audio_pretrained=False, audio_stem_stride=4,
                    audio_norm=False, projection_dropout=0.0, dim=128, decoder_dim=64, img_size=96,
                    tau=0.1,                  # at 0.03, whether M2ICL learns to tell sounds apart depends on batch order
                    mask_same_video=True, pmr_epochs=1, c2am_self_pairs=False,
                    equivariance=10.0,        # from random init plain C2AM splits frames by position
                    channel_shuffle=True,     # ... and, with that fixed, by hue
                    cue_threshold=0.5,
                    pseudo_gate="objects",    # Eq. 6 marks silent objects too
                    augment="flip", epochs=1, batch_size=16, lr=1e-3),
}
# The fields that set the size of a run rather than the recipe: bench/run.py runs the `paper` recipe at the
# `small` preset's scale by taking these from `small`.
SCALE_FIELDS = ("backbone", "pretrained", "audio_pretrained", "audio_stem_stride", "dim", "decoder_dim", "img_size",
                "pmr_epochs", "epochs", "batch_size", "lr")
# The fields that phase 1 (pseudo mask refinement) reads: a change to any other field reuses its pseudo masks.
# PMR_VERSION goes into the same key: raise it whenever phase 1's code changes what it writes.
PMR_VERSION = 2
PMR_FIELDS = ("backbone", "pretrained", "dim", "decoder_dim", "img_size", "pmr_epochs", "c2am_self_pairs",
              "equivariance", "channel_shuffle", "cue_threshold", "crf_iterations", "augment", "batch_size", "lr")


# Bounds of the numeric fields: (lowest, highest or None, whether the lowest itself is excluded). Batches need
# two frames: M2ICL and C2AM contrast each frame with the others.
RANGES = {"audio_stem_stride": (1, None, False), "projection_dropout": (0.0, 0.99, False), "dim": (1, None, False),
          "decoder_dim": (1, None, False), "img_size": (32, None, False), "fusion_stages": (1, 4, False),
          "tau": (0.0, None, True), "avf_weight": (0.0, None, False), "pmr_epochs": (1, None, False),
          "equivariance": (0.0, None, False), "cue_threshold": (0.0, 1.0, True), "crf_iterations": (0, None, False),
          "class_avf_weight": (0.0, None, False), "epochs": (1, None, False), "batch_size": (2, None, False),
          "lr": (0.0, None, False)}

CHOICES = {"pseudo_gate": ("none", "audio", "objects"), "augment": ("flip", "crop-flip"),
           "class_evidence": ("cam", "cam+sound")}


def check_range(name, value):
    """ValueError unless a numeric Config field's value is within RANGES."""
    low, high, low_excluded = RANGES[name]
    if value != value or value < low or (low_excluded and value == low) or (high is not None and value > high):
        bound = f"> {low}" if low_excluded else f">= {low}"
        raise ValueError(f"must be {bound}{'' if high is None else f' and <= {high}'}, got {value}")


def preset_config(preset, **overrides):
    """The preset's Config with some fields replaced; unknown names or bad values raise ValueError."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    unknown = set(overrides) - {f.name for f in fields(Config)}
    if unknown:
        raise ValueError(f"unknown Config fields: {', '.join(sorted(unknown))}")
    cfg = replace(PRESETS[preset], **overrides)
    for name in RANGES:
        try:
            check_range(name, getattr(cfg, name))
        except ValueError as exc:
            raise ValueError(f"{name} {exc}") from None
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be {'|'.join(allowed)}, got {getattr(cfg, name)!r}")
    return cfg


def differences(cfg, preset):
    """{field: value} of cfg where it differs from the preset."""
    base = PRESETS[preset]
    return {f.name: getattr(cfg, f.name) for f in fields(Config) if getattr(cfg, f.name) != getattr(base, f.name)}


class PretrainedWeightsError(RuntimeError):
    pass


def resnet(name, pretrained, in_channels=3, stem_stride=2):
    """A torchvision ResNet without its classifier; ImageNet weights on request."""
    import torchvision          # here, not at the top: it loads torch._dynamo (2 s), which --help never needs
    if name not in ("resnet18", "resnet50"):
        raise ValueError(f"unknown backbone {name!r}: expected resnet18 or resnet50")
    weights = {"resnet18": "IMAGENET1K_V1", "resnet50": "IMAGENET1K_V2"}[name] if pretrained else None
    try:
        net = getattr(torchvision.models, name)(weights=weights)
    except Exception as e:  # no internet, proxy, corrupt cache...
        raise PretrainedWeightsError(
            f"could not load ImageNet weights for {name} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            f"put them in {torch.hub.get_dir()}/checkpoints or pass --no-pretrained") from None
    if in_channels != 3 or stem_stride != 2:
        rgb_stem = net.conv1.weight.data                                 # (64, 3, 7, 7)
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stem_stride, 3, bias=False)
        if pretrained and in_channels == 1:                               # a grey image gives the RGB filters' sum
            net.conv1.weight.data.copy_(rgb_stem.sum(dim=1, keepdim=True))
    net.fc = nn.Identity()
    return net


def stage_channels(backbone):
    return {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}[backbone]


# ---------------------------------------------------------------------------------------------
# 1. Encoders (section 3.1): a_i = g_a(f_a(audio)), {v_i^s} = g_v(f_v(image))

class AudioEncoder(nn.Module):
    """ResNet on the 1 x 257 x 300 log spectrogram, global max pooling, (LayerNorm +) projection to D."""

    def __init__(self, cfg):
        super().__init__()
        self.net = resnet(cfg.backbone, cfg.audio_pretrained, in_channels=1, stem_stride=cfg.audio_stem_stride)
        channels = stage_channels(cfg.backbone)[-1]
        self.proj = nn.Sequential(nn.LayerNorm(channels) if cfg.audio_norm else nn.Identity(), nn.Linear(channels, cfg.dim))

    def forward(self, audio):                                   # (B, 1, 257, 300)
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(audio))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))            # (B, C4, h, w)
        return self.proj(x.amax(dim=(2, 3)))                     # (B, D)


class StageProjection(nn.Module):
    """Per-position LayerNorm -> Dropout -> Linear from a stage's C channels to D (channels kept on dim 1)."""

    def __init__(self, channels, dim, dropout):
        super().__init__()
        self.norm, self.dropout, self.linear = nn.LayerNorm(channels), nn.Dropout(dropout), nn.Linear(channels, dim)

    def forward(self, x):                                        # (B, C, h, w)
        x = self.linear(self.dropout(self.norm(x.permute(0, 2, 3, 1))))  # (B, h, w, D)
        return x.permute(0, 3, 1, 2)                             # (B, D, h, w)


class VisualEncoder(nn.Module):
    """ResNet stages 1-4 (strides 4, 8, 16, 32), each projected to D. The contrastive models (WS-AVS, EZ-VSL)
    use the release's projection dropout; C2AM and CAM project without it (their own code has none)."""

    def __init__(self, cfg, dropout=0.0):
        super().__init__()
        self.net = resnet(cfg.backbone, cfg.pretrained)
        self.proj = nn.ModuleList(StageProjection(c, cfg.dim, dropout) for c in stage_channels(cfg.backbone))

    def forward(self, image):                                    # (B, 3, S, S)
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(image))))
        visual_maps = []
        for layer, proj in zip((n.layer1, n.layer2, n.layer3, n.layer4), self.proj):
            x = layer(x)
            visual_maps.append(proj(x))                          # (B, D, S/4, S/4) ... (B, D, S/32, S/32)
        return visual_maps


# ---------------------------------------------------------------------------------------------
# 2. Audio-visual fusion, Eq. 1: z = v + mu( theta(v) phi(a_hat)^T / (h w) omega(v) )

class AudioVisualFusion(nn.Module):
    """Non-local fusion of one stage. a_hat is a tiled over h x w, so the (hw x hw) affinity
    theta(v) phi(a_hat)^T has identical columns t_p = <theta(v_p), phi(a)>; multiplying it by
    omega(v) / hw gives t_p * mean_q omega(v_q). We compute that directly: same numbers, no hw^2 matrix."""

    def __init__(self, dim):
        super().__init__()
        inner = dim // 2
        self.theta, self.omega = nn.Conv2d(dim, inner, 1), nn.Conv2d(dim, inner, 1)
        self.phi = nn.Linear(dim, inner)       # a 1x1 conv on the tiled audio = a linear map of a
        self.mu = nn.Conv2d(inner, dim, 1)

    def forward(self, visual, audio):                            # (B, D, h, w), (B, D)
        affinity = torch.einsum("bchw,bc->bhw", self.theta(visual), self.phi(audio))  # (B, h, w) = t_p
        context = self.omega(visual).mean(dim=(2, 3))            # (B, D/2)
        fused = affinity[:, None] * context[:, :, None, None]    # (B, D/2, h, w)
        return visual + self.mu(fused)                           # Eq. 1


# ---------------------------------------------------------------------------------------------
# 3. Decoder: Panoptic-FPN semantic head (Kirillov et al. 2019) on the fused maps -> mask logits

def conv_gn_relu(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(8, c_out), nn.ReLU(inplace=True))


class MaskDecoder(nn.Module):
    """FPN top-down pathway, then each level brought to stride 4 by (conv-GN-ReLU, 2x upsample)
    blocks, summed, a 1x1 prediction, and a final upsample to the input resolution."""

    def __init__(self, dim, hidden, n_stages=4, out_channels=1):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(dim, hidden, 1) for _ in range(n_stages))
        self.smooth = nn.ModuleList(nn.Conv2d(hidden, hidden, 3, padding=1) for _ in range(n_stages))
        self.towers = nn.ModuleList(
            nn.ModuleList(conv_gn_relu(hidden, hidden) for _ in range(max(1, s))) for s in range(n_stages))
        self.predict = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, maps, out_size):                           # maps: finest first, (B, D, h_s, w_s)
        laterals = [lat(m) for lat, m in zip(self.lateral, maps)]
        for s in range(len(laterals) - 2, -1, -1):               # top-down: coarse into fine
            laterals[s] = laterals[s] + F.interpolate(laterals[s + 1], size=laterals[s].shape[-2:], mode="nearest")
        sizes = [lat.shape[-2:] for lat in laterals]
        semantic = 0
        for s, (smooth, tower) in enumerate(zip(self.smooth, self.towers)):
            x = smooth(laterals[s])
            for k, block in enumerate(tower):                    # level s: s blocks, each followed by a
                x = block(x)                                     # 2x upsample, ending at stride 4
                if s > 0:
                    x = F.interpolate(x, size=sizes[s - 1 - k], mode="bilinear", align_corners=False)
            semantic = semantic + x                              # (B, hidden, S/4, S/4)
        logits = self.predict(semantic)                          # (B, out, S/4, S/4)
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)  # (B, out, S, S)


class WSAVS(nn.Module):
    def __init__(self, cfg, out_channels=1):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = AudioEncoder(cfg)
        self.visual_encoder = VisualEncoder(cfg, cfg.projection_dropout)
        self.fusion = nn.ModuleList(AudioVisualFusion(cfg.dim) for _ in range(cfg.fusion_stages))
        self.decoder = MaskDecoder(cfg.dim, cfg.decoder_dim, out_channels=out_channels)

    def forward(self, image, audio):
        audio_embed = self.audio_encoder(audio)                  # (B, D)
        visual_maps = self.visual_encoder(image)                 # 4 x (B, D, h_s, w_s)
        k = self.cfg.fusion_stages                               # the last k stages are fused (Eq. 1)
        fused_maps = visual_maps[:4 - k] + [fuse(v, audio_embed) for fuse, v in zip(self.fusion, visual_maps[4 - k:])]
        mask_logits = self.decoder(fused_maps, image.shape[-2:])  # (B, 1, S, S); M = sigmoid(mask_logits)
        return {"mask_logits": mask_logits, "audio_embed": audio_embed, "visual_maps": visual_maps[4 - k:],
                "all_visual_maps": visual_maps}

    @torch.no_grad()
    def predict(self, image, audio):
        return torch.sigmoid(self(image, audio)["mask_logits"])  # (B, 1, S, S)


# ---------------------------------------------------------------------------------------------
# 4. M2ICL, Eq. 3-5: sim(a_i, v_m^s) = max over positions of cos(a_i, v_m^s[:, p]), tau, both directions

def scores_both_ways(all_queries, mine, visual, gather):
    """Max-pooled cosine scores (Eq. 2) between queries and frames, both ways, without moving any map.
    all_queries (N Q, D): every rank's queries, normalised; mine (Q,): the rows of this rank's in it; visual
    (B, D, h, w): this rank's maps, normalised. Each rank scores every rank's queries against its own maps, a
    (B, N Q) block, and the blocks are gathered. -> (my queries x every rank's frames (Q, N B), my frames x every
    rank's queries (B, N Q))."""
    frames_to_queries = maxsim(all_queries, visual, backend="auto").t()           # (B, N Q)
    if not gather:
        return frames_to_queries.t(), frames_to_queries
    all_scores = gather(frames_to_queries)[0]                                      # (N B, N Q): [frame m, query i]
    return all_scores[:, mine].t(), frames_to_queries


def m2icl_loss(audio_embed, visual_maps, video_ids, tau, gather=None, mask_same_video=False):
    """audio_embed (B, D); visual_maps S x (B, D, h_s, w_s); video_ids (B,) ints.
    The paper takes every other item of the batch as a negative. Two frames of the same video are false
    negatives: mask_same_video drops their logits (the positive pair itself is kept).
    gather (several processes): x -> (x of every rank concatenated, with gradients; where this rank's rows
    start). Only audio embeddings and scores cross processes, never the maps (scores_both_ways), so N processes
    with batch B train like one with batch N B, exchanging O(N B D + (N B)^2) numbers per stage whatever the
    maps' size."""
    device = audio_embed.device.type                 # under autocast the kernel reads half precision maps
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else audio_embed.dtype
    audio = F.normalize(audio_embed, dim=1).to(dtype)
    all_video_ids, offset = gather(video_ids) if gather else (video_ids, 0)
    target = offset + torch.arange(len(video_ids), device=audio.device)       # (B,) the positives' columns
    positive = F.one_hot(target, len(all_video_ids)).bool()
    false_negative = (video_ids[:, None] == all_video_ids[None, :]) & ~positive & mask_same_video  # (B, N B)
    all_audio = gather(audio)[0] if gather else audio                        # (N B, D)
    loss = 0
    for visual in visual_maps:
        visual = F.normalize(visual, dim=1).to(dtype)                            # (B, D, h, w)
        audio_to_visual, visual_to_audio = scores_both_ways(all_audio, target, visual, gather)   # (B, N B) each
        for logits in (audio_to_visual, visual_to_audio):                            # Eq. 3, Eq. 4
            loss = loss + F.cross_entropy((logits / tau).masked_fill(false_negative, float("-inf")), target)
    return loss                                                  # Eq. 5: summed over stages, mean over i


def localization_map(audio_embed, visual_maps, size):
    """cos(a_i, v_i^s[:, p]) at every position: the map whose max M2ICL takes, averaged over the stages
    after upsampling to `size`, then min-max normalised per image. audio_embed (B, D) -> (B, 1, *size) in [0, 1];
    (B, Q, D), Q queries per image -> (B, Q, *size)."""
    audio = F.normalize(audio_embed.view(len(audio_embed), -1, audio_embed.shape[-1]), dim=2)      # (B, Q, D)
    cos = [torch.einsum("bqd,bdhw->bqhw", audio, F.normalize(v, dim=1)) for v in visual_maps]
    mean = sum(F.interpolate(c, size=size, mode="bilinear", align_corners=False) for c in cos) / len(cos)
    return minmax_normalise(mean)


def minmax_normalise(x):
    """Per image: (x - min) / (max - min) over the spatial dims of (B, C, h, w)."""
    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    return (x - low) / (high - low).clamp_min(1e-6)


# ---------------------------------------------------------------------------------------------
# 5. Pseudo mask refinement (section 3.3): C2AM class-agnostic map A, a saliency head S trained on
#    A's cues, and the pseudo mask of Eq. 6. Phase 1: trained before WS-AVS, with its own encoder.

def summed_at_stride_8(visual_maps):
    """The multi-scale visual maps resized to stage 2's size (stride 8) and summed: (B, D, S/8, S/8)."""
    size = visual_maps[1].shape[-2:]
    return sum(F.interpolate(v, size=size, mode="bilinear", align_corners=False) for v in visual_maps)


class PseudoMaskNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.visual_encoder = VisualEncoder(cfg)
        # C2AM activation head: 3x3 conv to one channel + BatchNorm + sigmoid, on the multi-scale
        # visual features summed at stride 8 (the paper applies C2AM "on multi-scale visual features").
        self.activation_head = nn.Sequential(nn.Conv2d(cfg.dim, 1, 3, padding=1, bias=False), nn.BatchNorm2d(1))
        self.register_buffer("flip_polarity", torch.zeros((), dtype=torch.bool))  # set by decide_polarity
        self.saliency_head = MaskDecoder(cfg.dim, cfg.decoder_dim)

    def features(self, image):
        visual_maps = self.visual_encoder(image)                 # 4 x (B, D, h_s, w_s)
        return visual_maps, summed_at_stride_8(visual_maps)      # (B, D, S/8, S/8)

    def activation(self, features):
        act = torch.sigmoid(self.activation_head(features))      # (B, 1, S/8, S/8), A in [0, 1]
        return torch.where(self.flip_polarity, 1 - act, act)

    def predict(self, image, audio):
        """The C2AM baseline of Table 1: the Eq. 6 pseudo mask itself; it never hears the audio."""
        return pseudo_masks(self, image)


CHANNEL_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def shuffle_channels(image, generator=None):
    """Each frame of (B, 3, S, S) with its RGB channels in a random order (one of the 6, uniformly)."""
    order = torch.tensor(CHANNEL_ORDERS)[torch.randint(6, (len(image),), generator=generator)].to(image.device)
    return torch.gather(image, 1, order[:, :, None, None].expand_as(image))


def class_agnostic_map(net, image):
    """(visual maps of the frame, A (B, 1, S/8, S/8)). A map trained on frames in random channel orders is
    applied as its mean over the 6 orders: the same distribution it was trained on, for every frame."""
    visual_maps, features = net.features(image)
    if not net.cfg.channel_shuffle:
        return visual_maps, net.activation(features)
    maps = [net.activation(net.features(image[:, list(order)])[1]) for order in CHANNEL_ORDERS]
    return visual_maps, sum(maps) / len(maps)


def _pairwise_cos(x, y):
    return (F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()).clamp(5e-4, 0.9995)  # (B, B)


def sim_max(x, self_pairs=True, rank_weight=0.25):
    """C2AM SimMax: -log cos over pairs of one kind, each pair weighted exp(-0.25 * rank), rank 0 = the most
    similar other sample of the row. With self_pairs (CCAM) the mean also holds each sample's pair with itself,
    ranked -1; its cos is clamped to 0.9995, so it adds a constant and no gradient."""
    cos = _pairwise_cos(x, x)
    self_pair = torch.eye(len(x), dtype=torch.bool, device=x.device)
    rank = cos.masked_fill(self_pair, 2.0).argsort(dim=1, descending=True).argsort(dim=1).float() - 1  # self: -1
    loss = -torch.log(cos) * torch.exp(-rank_weight * rank)
    return loss.mean() if self_pairs else loss[~self_pair].mean()


def sim_min(x, y):
    """C2AM SimMin: -log(1 - cos) over all foreground-background pairs."""
    return -torch.log(1 - _pairwise_cos(x, y)).mean()


def c2am_loss(features, activation, self_pairs=True, gather=None):
    """features (B, D, h, w), activation A (B, 1, h, w): contrast foreground and background features.
    gather (several processes, as in m2icl_loss): the contrast runs over every rank's pooled vectors, (N B, D)
    each, with gradients; each rank computes the same loss on them, so the mean gradient over ranks is the one
    of a single process with the global batch."""
    hw = features.shape[-2] * features.shape[-1]
    foreground = (activation * features).sum(dim=(2, 3)) / hw        # (B, D)
    background = ((1 - activation) * features).sum(dim=(2, 3)) / hw  # (B, D)
    if gather:
        foreground, background = gather(foreground)[0], gather(background)[0]       # (N B, D)
    return sim_max(foreground, self_pairs) + sim_min(foreground, background) + sim_max(background, self_pairs)


def random_affine(batch, generator=None, min_scale=0.5):
    """(B, 2, 3) affine_grid thetas: a random zoom-in (scale in [min_scale, 1]) at a random place, composed
    with one of the 8 flips/quarter turns of the square. Warping an image and a map with the same theta
    keeps them aligned."""
    scale = min_scale + (1 - min_scale) * torch.rand(batch, generator=generator)
    shift = (1 - scale) * (2 * torch.rand(2, batch, generator=generator) - 1)       # crop stays inside
    turns = torch.randint(4, (batch,), generator=generator) * (torch.pi / 2)
    mirror = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(turns).round(), torch.sin(turns).round()
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * cos * mirror, -scale * sin
    theta[:, 1, 0], theta[:, 1, 1] = scale * sin * mirror, scale * cos
    theta[:, 0, 2], theta[:, 1, 2] = shift[0], shift[1]
    return theta


def warp(x, theta, size=None):
    """Resample x (B, C, h, w) through the affine thetas (B, 2, 3), to `size` (default: x's own)."""
    grid = F.affine_grid(theta.to(x), (x.shape[0], x.shape[1], *(size or x.shape[-2:])), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def equivariance_loss(activation, warped_activation, theta):
    """Addition to C2AM (after SEAM, Wang et al. CVPR 2020): the map of a zoomed/flipped image must be the
    zoomed/flipped map. From random init C2AM otherwise splits frames by position (left vs right), which the
    zero padding makes easy to contrast; a position split cannot be equivariant."""
    return (warp(activation, theta) - warped_activation).abs().mean()


def c2am_step_loss(net, image, gather=None):
    """One step of phase 1a, the C2AM loss of a batch (B, 3, S, S) -> (loss, A of the batch's frames).
    Additions (Config): channel_shuffle trains on frames in random RGB orders, so that the map cannot split
    frames by hue; equivariance > 0 appends a zoomed/flipped copy of every frame, contrasted with the others,
    and asks its map to be the warped map. With neither, this is CCAM's loss on the batch. gather: c2am_loss."""
    cfg = net.cfg
    if cfg.channel_shuffle:
        image = shuffle_channels(image)
    if cfg.equivariance > 0:
        theta = random_affine(len(image)).to(image.device)
        image = torch.cat([image, warp(image, theta)])                           # (2B, 3, S, S)
    _, features = net.features(image)
    activation = net.activation(features)
    loss = c2am_loss(features, activation, cfg.c2am_self_pairs, gather)
    if cfg.equivariance > 0:
        activation, warped = activation.chunk(2)
        loss = loss + cfg.equivariance * equivariance_loss(activation, warped, theta)
    return loss, activation.detach()


def border_activation(activation, image_size):
    """Mean activation on a border band 4 px wide at 224 px (scaled with the input size)."""
    act = F.interpolate(activation, size=image_size, mode="bilinear", align_corners=False)
    band = max(1, round(4 * image_size[0] / 224))
    inner = torch.zeros_like(act, dtype=torch.bool)
    inner[..., band:-band, band:-band] = True
    return act[~inner.expand_as(act)].mean()


def decide_polarity(net, mean_border_activation):
    """CCAM's polarity check, after the first epoch: a map that fires on the frame's border has learned the
    background as its foreground, so it is used flipped (1 - A) from then on; the flag is saved with the weights."""
    if mean_border_activation > 0.5:
        net.flip_polarity.fill_(True)


def dense_crf(rgb, foreground, iterations, size=48, chunk=8):
    """Fully connected two-label CRF (Kraehenbuehl & Koltun, NeurIPS 2011) by mean field, as CCAM refines its
    cues: Potts compatibility, a bilateral kernel (weight 10, sigma 80 px in position, 13 in RGB) and a
    smoothness kernel (weight 3, sigma 3 px), positions measured in a 224-px frame. Exact, on a size x size grid
    (the kernel is (size^2)^2 per image), then upsampled. A pixel keeps its label where it looks like the
    pixels that share it anywhere in the frame, so a halo of background around an object flips to background.
    rgb (B, 3, H, W) in 0..255; foreground (B, 1, H, W) the unary probability -> refined probability, same shape."""
    height, width = rgb.shape[-2:]
    rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    p = F.interpolate(foreground, size=(size, size), mode="bilinear", align_corners=False).flatten(1)  # (B, N)
    grid = torch.arange(size, device=rgb.device, dtype=rgb.dtype) * (224 / size)
    position = torch.stack(torch.meshgrid(grid, grid, indexing="ij")).flatten(1).t()                    # (N, 2)
    distance = torch.cdist(position, position) ** 2                                                     # (N, N)
    smooth = 3 * torch.exp(-distance / (2 * 3.0 ** 2))
    refined = []
    for rgb_chunk, p_chunk in zip(rgb.split(chunk), p.split(chunk)):
        kernel = 10 * torch.exp(-distance / (2 * 80.0 ** 2) - torch.cdist(rgb_chunk, rgb_chunk) ** 2 / (2 * 13.0 ** 2))
        kernel = (kernel + smooth) * (1 - torch.eye(len(distance), device=rgb.device))                  # (b, N, N)
        unary = -torch.log(torch.stack([1 - p_chunk, p_chunk], dim=2).clamp(1e-5, 1 - 1e-5))            # (b, N, 2)
        q = torch.softmax(-unary, dim=2)
        for _ in range(iterations):
            q = torch.softmax(-unary - (kernel @ q).flip(2), dim=2)      # Potts: pay for neighbours labelled otherwise
        refined.append(q[..., 1])
    refined = torch.cat(refined).view(-1, 1, size, size)
    return F.interpolate(refined, size=(height, width), mode="bilinear", align_corners=False)


def saliency_targets(image, activation, threshold, crf_iterations):
    """The cues the saliency head learns, (B, 1, S, S) in {0, 1}: A min-max normalised per image (as C2AM's cue
    extraction), foreground where it reaches the threshold; with crf_iterations > 0 (CCAM), the unary
    A / (A + threshold) (0.5 at the threshold) refined by dense_crf on the frame's own colours first."""
    activation = F.interpolate(minmax_normalise(activation), size=image.shape[-2:], mode="bilinear", align_corners=False)
    if crf_iterations == 0:
        return (activation >= threshold).float()
    rgb = (image * image.new_tensor(IMAGENET_STD)[:, None, None] + image.new_tensor(IMAGENET_MEAN)[:, None, None]) * 255
    refined = dense_crf(rgb, activation / (activation + threshold), crf_iterations, size=min(48, image.shape[-1] // 2))
    return (refined > 0.5).float()


def saliency_step_loss(net, image):
    """One step of phase 1b: the saliency head (a Panoptic-FPN head on the frozen C2AM encoder) learns A's cues."""
    with torch.no_grad():
        visual_maps, activation = class_agnostic_map(net, image)
        targets = saliency_targets(image, activation, net.cfg.cue_threshold, net.cfg.crf_iterations)
    return F.binary_cross_entropy_with_logits(net.saliency_head(visual_maps, image.shape[-2:]), targets)


def refine_pseudo_mask(activation, saliency):
    """Eq. 6: Y_hat = L[argmax([S_bg; A])] with labels L = [0; 1] for (background cue, class-agnostic map).
    The background cue is 1 - saliency, so a pixel is foreground iff A > 1 - S. Both (B, 1, S, S)."""
    return (activation > 1 - saliency).float()


@torch.no_grad()
def pseudo_masks(net, image):
    """Phase 1c: the binary Eq. 6 pseudo mask of each frame of a batch, (B, 1, S, S)."""
    visual_maps, activation = class_agnostic_map(net, image)
    activation = F.interpolate(activation, size=image.shape[-2:], mode="bilinear", align_corners=False)
    saliency = torch.sigmoid(net.saliency_head(visual_maps, image.shape[-2:]))
    return refine_pseudo_mask(activation, saliency)


# ---------------------------------------------------------------------------------------------
# 6. Training losses: L_pmr = BCE(M, Y_hat) (Eq. 7), L = L_avf + L_pmr (Eq. 8)

def audio_specific(audio_embed, all_audio):
    """Unit audio embeddings minus the mean unit embedding of the batch's sounds all_audio (N, D).
    The M2ICL map of any sound is high on every object: that part of cos(a_i, v) is shared by all sounds.
    What a sound has that the batch's other sounds lack points at its own object. (B, D) -> (B, D)."""
    return F.normalize(audio_embed, dim=1) - F.normalize(all_audio, dim=1).mean(dim=0, keepdim=True)


def audio_gated_pseudo_mask(pseudo_mask, audio_embed, visual_maps, all_audio, threshold=0.5, per_object=False):
    """Addition to the paper (Config.pseudo_gate "audio" or "objects"): Eq. 6 masks do not depend on the audio,
    so on a frame with silent objects they mark those too, and a decoder trained on them cannot learn to listen.
    Keep only the pseudo-mask pixels where the model's own (detached) M2ICL localization map of the
    audio_specific embedding, normalised per image, reaches the threshold; per_object ("objects"): keep whole
    connected components of the pseudo mask whose mean map reaches it, and the best one always. The map is
    coarse (stride 4 to 32): per pixel, it keeps the neighbours of the sounding object that lie near it.
    Which stages: the max of Eq. 3 can settle on background patches at some stages (they tell videos apart
    too), and which stages do that changes from run to run; gating with such a map empties the targets. So
    each stage is weighted by how much higher its plain map is on the pseudo-foreground than off it in that
    image (0 if not higher), and an image where no stage points at the pseudo-foreground, or whose
    audio-specific map is flat, keeps its whole pseudo mask.
    pseudo_mask (B, 1, S, S) in {0, 1}; audio_embed (B, D); visual_maps k x (B, D, h_s, w_s);
    all_audio (N, D): the sounds of the whole batch (every rank's), audio_embed's among them."""
    size = pseudo_mask.shape[-2:]

    def stage_maps(audio):                                                                      # (B, k, S, S)
        return torch.cat([localization_map(audio, [v], size) for v in visual_maps], dim=1)

    plain = stage_maps(audio_embed)
    inside = (plain * pseudo_mask).sum(dim=(2, 3)) / pseudo_mask.sum(dim=(2, 3)).clamp_min(1)
    outside = (plain * (1 - pseudo_mask)).sum(dim=(2, 3)) / (1 - pseudo_mask).sum(dim=(2, 3)).clamp_min(1)
    weight = (inside - outside).clamp_min(0)[..., None, None]                                   # (B, k, 1, 1)
    specific = (weight * stage_maps(audio_specific(audio_embed, all_audio))).sum(dim=1, keepdim=True)
    spread = specific.amax(dim=(1, 2, 3)) - specific.amin(dim=(1, 2, 3))                        # (B,)
    pointed = (weight.sum(dim=(1, 2, 3)) > 0) & (spread > 1e-6)
    localization = minmax_normalise(specific)                                                   # (B, 1, S, S)
    keep = per_object_mean(localization, pseudo_mask) if per_object else localization
    return pseudo_mask * torch.where(pointed[:, None, None, None], (keep >= threshold).float(), 1.0)


def connected_components(mask):
    """Labels (B, 1, S, S) of the 8-connected components of a {0, 1} mask: 0 off the mask, else the largest
    pixel number (1-based, row-major) in the component, spread by repeated 3 x 3 max pooling."""
    b, _, h, w = mask.shape
    numbers = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, 1, h, w)
    labels = numbers * mask.float()
    while True:
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * mask.float()
        if torch.equal(grown, labels):
            return labels.long()
        labels = grown


def per_object_mean(localization, pseudo_mask):
    """Each pixel of the pseudo mask gets the mean localization of its connected component (an object of
    the pseudo mask), and the best component of each image gets 1, so that it is always kept; 0 elsewhere.
    localization, pseudo_mask (B, 1, S, S) -> (B, 1, S, S)."""
    b = len(pseudo_mask)
    labels = connected_components(pseudo_mask).flatten(1)                             # (B, S*S)
    slots = labels.shape[1] + 1
    flat = (labels + slots * torch.arange(b, device=labels.device)[:, None]).flatten()  # unique per image
    sums = torch.zeros(b * slots, device=labels.device).index_add_(0, flat, localization.flatten().float())
    counts = torch.zeros(b * slots, device=labels.device).index_add_(0, flat, torch.ones_like(flat, dtype=torch.float))
    mean = torch.where(counts > 0, sums / counts.clamp_min(1), -1.0).view(b, slots)   # -1: no such component
    mean[:, 0] = -1                                                                    # off the mask
    mean[torch.arange(b), mean.argmax(dim=1)] = 1.0                                    # the best object stays
    return (mean.gather(1, labels) * (labels > 0)).view_as(pseudo_mask)


def avm_loss(mask_logits, visual, audio_embed):
    """AVSBench's audio-visual matching regulariser, the only loss of the avs-ws baseline: KL divergence
    between the audio embedding and the mask-pooled visual map, each softmaxed over channels.
    mask_logits (B, 1, S, S), visual (B, D, h, w), audio_embed (B, D)."""
    mask = F.interpolate(torch.sigmoid(mask_logits), size=visual.shape[-2:], mode="bilinear", align_corners=False)
    pooled = (mask * visual).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp_min(1e-6)       # (B, D)
    return F.kl_div(F.log_softmax(pooled, dim=1), F.log_softmax(audio_embed, dim=1), log_target=True,
                    reduction="batchmean")


def wsavs_loss(out, pseudo_mask, video_ids, cfg, avf=True, pmr=True, gather=None):
    """Eq. 8, L = avf_weight * L_avf + L_pmr, with the Table 2 switches: without AVF there is no M2ICL (and no
    M2ICL map to gate the pseudo masks with); without PMR the decoder's only signal is avs-ws's matching loss."""
    parts = {}
    if avf:
        parts["avf"] = cfg.avf_weight * m2icl_loss(out["audio_embed"], out["visual_maps"], video_ids, cfg.tau,
                                                   gather, cfg.mask_same_video)                # Eq. 5
    if pmr:
        if avf and cfg.pseudo_gate != "none":
            audio = out["audio_embed"].detach()
            pseudo_mask = audio_gated_pseudo_mask(pseudo_mask, audio, [v.detach() for v in out["visual_maps"]],
                                                  gather(audio)[0] if gather else audio,
                                                  per_object=cfg.pseudo_gate == "objects")
        parts["pmr"] = F.binary_cross_entropy_with_logits(out["mask_logits"], pseudo_mask)    # Eq. 7
    else:
        parts["avm"] = avm_loss(out["mask_logits"], out["visual_maps"][-1], out["audio_embed"])
    return sum(parts.values()), {name: value.detach() for name, value in parts.items()}  # Eq. 8


# ---------------------------------------------------------------------------------------------
# 7. Table 1 baselines that need their own network (avs-ws is WSAVS trained with avm_loss alone;
#    C2AM is PseudoMaskNet.predict)

class CAMNet(nn.Module):
    """CAM (Zhou et al. 2016): a frame classifier trained on the video's category label (the paper's
    instance-level label), global average pooling over a 1x1-conv class map of the multi-scale features
    at stride 8. Its mask is the map of the top-scoring class, min-max normalised; no audio."""

    def __init__(self, cfg, num_classes):
        super().__init__()
        self.cfg = cfg
        self.visual_encoder = VisualEncoder(cfg)
        self.classifier = nn.Conv2d(cfg.dim, num_classes, 1)

    def forward(self, image):
        class_maps = self.classifier(summed_at_stride_8(self.visual_encoder(image)))  # (B, K, S/8, S/8)
        return {"class_maps": class_maps, "class_logits": class_maps.mean(dim=(2, 3))}  # (B, K)

    @torch.no_grad()
    def predict(self, image, audio):
        class_maps = self(image)["class_maps"]
        top = class_maps.mean(dim=(2, 3)).argmax(dim=1)                                      # (B,)
        cam = F.relu(class_maps[torch.arange(len(top)), top][:, None])                       # (B, 1, S/8, S/8)
        return minmax_normalise(F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False))


class EZVSL(nn.Module):
    """EZ-VSL (Mo & Morgado 2022): the audio and visual encoders trained with the multiple-instance
    contrastive loss on the last stage only (M2ICL with one scale); its mask is the audio-visual cosine
    map of that stage, min-max normalised (the object-guided refinement of EZ-VSL is left out)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = AudioEncoder(cfg)
        self.visual_encoder = VisualEncoder(cfg, cfg.projection_dropout)

    def forward(self, image, audio):
        return {"audio_embed": self.audio_encoder(audio), "visual_maps": self.visual_encoder(image)[-1:]}

    @torch.no_grad()
    def predict(self, image, audio):
        out = self(image, audio)
        return localization_map(out["audio_embed"], out["visual_maps"], image.shape[-2:])


# ---------------------------------------------------------------------------------------------
# 8. Weakly-supervised audio-visual SEMANTIC segmentation (AVSS) from video-level labels: our design in the
#    spirit of PCAS (Li et al., "Look, Listen and Segment"; no public code). K = classes with background.
#    Look before listening: a visual multi-label classifier of the video's sounding classes gives class
#    activation maps (CAM); an audio classifier of the same labels reads the sound with the visual class
#    evidence as a prompt, so it decides which of the visible classes sound. Listen before segmenting: the
#    sound's evidence for each class (the audio embedding through a learned per-class channel gate) is aligned
#    with image regions by M2ICL per class; the class-agnostic sounding mask of WS-AVS (Eq. 6 pseudo mask, gated
#    by the sound's M2ICL map) is split into the video's classes by their CAMs (plus their per-class sound maps
#    with class_evidence "cam+sound", which validation did not choose), and a K-way decoder learns those
#    per-pixel pseudo labels; at test time its argmax is taken among the classes the audio classifier hears.

class WSAVSS(WSAVS):
    """WS-AVS with a K-way decoder (background + K - 1 classes) and the two classifiers."""

    def __init__(self, cfg, num_classes):
        super().__init__(cfg, out_channels=num_classes)
        self.num_classes = num_classes
        self.class_head = nn.Conv2d(cfg.dim, num_classes - 1, 1)            # CAM over the foreground classes
        # the prompt: the visual class probabilities beside the audio embedding
        self.audio_class_head = nn.Linear(cfg.dim + num_classes - 1, num_classes - 1)
        # the channels of the audio embedding that carry each class: zero = every class starts as the whole sound
        self.class_gates = nn.Parameter(torch.zeros(num_classes - 1, cfg.dim))

    def forward(self, image, audio):
        out = super().forward(image, audio)
        class_maps = self.class_head(summed_at_stride_8(out["all_visual_maps"]))     # (B, K-1, S/8, S/8)
        visual_logits = class_maps.mean(dim=(2, 3))                                    # (B, K-1)
        prompt = torch.sigmoid(visual_logits).detach()              # the audio reads, never trains, the prompt
        audio_logits = self.audio_class_head(torch.cat([out["audio_embed"], prompt], dim=1))   # (B, K-1)
        class_audio = out["audio_embed"][:, None] * torch.sigmoid(self.class_gates)          # (B, K-1, D)
        return {**out, "class_maps": class_maps, "visual_logits": visual_logits, "audio_logits": audio_logits,
                "class_audio": class_audio}

    @torch.no_grad()
    def predict(self, image, audio):
        """The class-agnostic map: 1 - P(background), (B, 1, S, S)."""
        return 1 - torch.softmax(self(image, audio)["mask_logits"], dim=1)[:, :1]

    @torch.no_grad()
    def predict_classes(self, image, audio):
        """{"wsavss": the decoder's argmax among background and the classes the audio classifier hears (>= 0.5,
        at least its top one): what listens decides which classes may sound; "decoder": its plain argmax; and two
        baselines of the same network: "top_class", the class-agnostic mask labelled with the audio classifier's
        top class; "cam", each pixel the class of its highest normalised CAM among the classes the visual
        classifier finds where that CAM reaches 0.5, background elsewhere (no sound)}; each (B, S, S) int64."""
        out = self(image, audio)
        size = image.shape[-2:]
        heard = detected(torch.sigmoid(out["audio_logits"]))                                # (B, K-1)
        allowed = torch.cat([torch.ones_like(heard[:, :1]), heard], dim=1)[:, :, None, None]
        semantic = out["mask_logits"].masked_fill(~allowed, float("-inf")).argmax(dim=1)    # (B, S, S)
        foreground = torch.softmax(out["mask_logits"], dim=1)[:, 0] < 0.5
        top_class = torch.where(foreground, out["audio_logits"].argmax(dim=1)[:, None, None] + 1, 0)
        found = detected(torch.sigmoid(out["visual_logits"]))                               # (B, K-1)
        cams = minmax_normalise(F.relu(F.interpolate(out["class_maps"], size=size, mode="bilinear",
                                                     align_corners=False)))               # (B, K-1, S, S)
        cams = cams * found[:, :, None, None]
        best, index = cams.max(dim=1)
        cam = torch.where(best >= 0.5, index + 1, 0)
        return {"wsavss": semantic, "decoder": out["mask_logits"].argmax(dim=1), "top_class": top_class, "cam": cam}


def detected(probabilities):
    """The classes a multi-label classifier finds: probability >= 0.5, and the most probable one always."""
    return (probabilities >= 0.5) | (probabilities == probabilities.amax(dim=1, keepdim=True))


def multi_positive_nce(logits, positive, anchor):
    """Per row: -log(sum of exp over the positives / sum over all), 0 for rows that are not anchors. (R, C)."""
    positive = positive | ~anchor[:, None]
    return (logits.logsumexp(dim=1) - logits.masked_fill(~positive, float("-inf")).logsumexp(dim=1)) * anchor


def class_m2icl_loss(class_audio, visual_maps, labels, tau, gather=None):
    """M2ICL per class. class_audio (B, C, D): query (i, c) is the evidence for class c in sound i; labels (B, C)
    multi-hot of each video's sounding classes; visual_maps S x (B, D, h, w). Sim as Eq. 2 (max-pooled cosine),
    both ways with every matching pair as a positive: a query of a class its sound holds must pick the frames
    where that class sounds among the batch's frames (Eq. 3 per class); a frame must pick, among all queries,
    those of its classes from sounds that hold them (Eq. 4 per class), so the evidence for a class from a sound
    that lacks it is a negative everywhere. Summed over stages (Eq. 5), each way the mean over its anchors of the
    global batch; gather as m2icl_loss (queries and scores cross processes, never maps)."""
    b, c, _ = class_audio.shape
    device = class_audio.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else class_audio.dtype
    queries = F.normalize(class_audio, dim=2).flatten(0, 1).to(dtype)                  # (B C, D)
    all_labels, offset = gather(labels) if gather else (labels, 0)                      # (N B, C)
    all_queries = gather(queries)[0] if gather else queries                            # (N B C, D)
    world = len(all_labels) // b
    mine = offset * c + torch.arange(b * c, device=labels.device)                      # my queries' rows
    query_class = torch.arange(len(all_queries), device=labels.device) % c
    heard, all_heard = labels.flatten() > 0.5, all_labels.flatten() > 0.5              # (B C,), (N B C,)
    query_positive = all_labels.t()[query_class[mine]] > 0.5                             # (B C, N B)
    frame_positive = (labels[:, query_class] > 0.5) & all_heard                          # (B, N B C)
    framed, all_framed = labels.sum(1) > 0, all_labels.sum(1) > 0                        # frames with a label
    loss = 0
    for visual in visual_maps:
        visual = F.normalize(visual, dim=1).to(dtype)
        query_to_frame, frame_to_query = scores_both_ways(all_queries, mine, visual, gather)
        loss = loss + (multi_positive_nce(query_to_frame / tau, query_positive, heard).sum()
                       / (all_heard.sum() / world).clamp_min(1))
        loss = loss + (multi_positive_nce(frame_to_query / tau, frame_positive, framed).sum()
                       / (all_framed.sum() / world).clamp_min(1))
    return loss


def semantic_pseudo_labels(pseudo_mask, evidence, labels):
    """Per-pixel pseudo labels (B, S, S) int64: background off the class-agnostic pseudo mask; on it, the class
    among the video's labels with the most evidence there. pseudo_mask (B, 1, S, S) in {0, 1}, evidence
    (B, K-1, h, w), labels (B, K) multi-hot (index 0 = background, never set)."""
    evidence = F.interpolate(evidence, size=pseudo_mask.shape[-2:], mode="bilinear", align_corners=False)
    evidence = evidence.masked_fill(labels[:, 1:, None, None] < 0.5, float("-inf"))    # the video's classes only
    return torch.where(pseudo_mask[:, 0] > 0.5, evidence.argmax(dim=1) + 1, 0)


@torch.no_grad()
def class_evidence(out, kind):
    """Where each class is, (B, K-1, S/8, S/8): its CAM, min-max normalised ("cam"), plus ("cam+sound") the map of
    the sound's evidence for the class, as localization_map, in [0, 1] too, so that both must agree. Without
    M2ICL per class every class's sound evidence is the same map, which leaves the argmax to the CAMs."""
    cams = out["class_maps"]
    evidence = minmax_normalise(F.relu(cams))
    if kind == "cam+sound":
        evidence = evidence + localization_map(out["class_audio"], out["visual_maps"], cams.shape[-2:])
    return evidence


def wsavss_loss(out, pseudo_mask, labels, video_ids, cfg, gather=None):
    """Look: multi-label BCE of the visual and the (prompted) audio classifiers against the video's labels.
    Listen: M2ICL (Eq. 5), M2ICL per class, and the WS-AVS audio gate on the pseudo mask, as wsavs_loss.
    Segment: cross-entropy of the K-way decoder against semantic_pseudo_labels."""
    targets = labels[:, 1:]
    parts = {"visual_cls": F.binary_cross_entropy_with_logits(out["visual_logits"], targets),
             "audio_cls": F.binary_cross_entropy_with_logits(out["audio_logits"], targets),
             "avf": cfg.avf_weight * m2icl_loss(out["audio_embed"], out["visual_maps"], video_ids, cfg.tau, gather,
                                                cfg.mask_same_video)}
    if cfg.class_avf_weight > 0:
        parts["class_avf"] = cfg.class_avf_weight * class_m2icl_loss(out["class_audio"], out["visual_maps"], targets,
                                                                     cfg.tau, gather)
    if cfg.pseudo_gate != "none":
        audio = out["audio_embed"].detach()
        pseudo_mask = audio_gated_pseudo_mask(pseudo_mask, audio, [v.detach() for v in out["visual_maps"]],
                                              gather(audio)[0] if gather else audio,
                                              per_object=cfg.pseudo_gate == "objects")
    evidence = class_evidence(out, cfg.class_evidence)
    parts["seg"] = F.cross_entropy(out["mask_logits"], semantic_pseudo_labels(pseudo_mask, evidence, labels))
    return sum(parts.values()), {name: value.detach() for name, value in parts.items()}
