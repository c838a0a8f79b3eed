"""WS-AVS: Weakly-Supervised Audio-Visual Segmentation (Mo & Raj, NeurIPS 2023), in one file.

Read top to bottom, it follows section 3 of the paper:
  1. encoders: global audio embedding a_i and multi-scale visual maps v_i^s   (section 3.1)
  2. audio-visual fusion z_i^s                                                (Eq. 1)
  3. Panoptic-FPN semantic-head decoder -> mask logits M                      (section 3.1)
  4. multi-scale multiple-instance contrastive loss, M2ICL                    (Eq. 3-5)
  5. pseudo mask refinement: C2AM class-agnostic map, saliency, pseudo mask   (section 3.3, Eq. 6)
  6. the training losses, with the audio gate on the pseudo masks             (Eq. 7-8)
  7. the Table 1 baselines that need their own network: CAM, EZ-VSL           (section 4.2)
Shapes: B batch, D embedding dim, S input size, h x w a stage's spatial size.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from kernels import maxsim


@dataclass
class Config:
    backbone: str = "resnet50"     # resnet50 (paper) or resnet18 (small runs)
    dim: int = 512                 # D, the shared audio-visual embedding size
    decoder_dim: int = 128         # channels of the Panoptic-FPN decoder
    tau: float = 0.03              # M2ICL temperature
    img_size: int = 224
    audio_stem_stride: int = 2     # stride of the audio ResNet's first conv: 2 = standard ResNet
    pretrained: bool = True        # ImageNet weights for the visual encoders
    cue_threshold: float = 0.5     # normalised class-agnostic activation above this is a foreground cue
    fusion_stages: int = 4         # the last k stages get Eq. 1 fusion and M2ICL (paper Figure 3: 1..4)


class PretrainedWeightsError(RuntimeError):
    pass


def resnet(name, pretrained, in_channels=3, stem_stride=2):
    """A torchvision ResNet without its classifier; ImageNet weights on request."""
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
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stem_stride, 3, bias=False)
    net.fc = nn.Identity()
    return net


def stage_channels(backbone):
    return {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}[backbone]


# ---------------------------------------------------------------------------------------------
# 1. Encoders (section 3.1): a_i = g_a(f_a(audio)), {v_i^s} = g_v(f_v(image))

class AudioEncoder(nn.Module):
    """ResNet on the 1 x 257 x 300 log spectrogram, global max pooling, projection to D."""

    def __init__(self, cfg):
        super().__init__()
        self.net = resnet(cfg.backbone, False, in_channels=1, stem_stride=cfg.audio_stem_stride)
        self.proj = nn.Linear(stage_channels(cfg.backbone)[-1], cfg.dim)

    def forward(self, audio):                                   # (B, 1, 257, 300)
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(audio))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))            # (B, C4, h, w)
        return self.proj(x.amax(dim=(2, 3)))                     # (B, D)


class StageProjection(nn.Module):
    """Per-position LayerNorm + Linear from a stage's C channels to D (channels kept on dim 1)."""

    def __init__(self, channels, dim):
        super().__init__()
        self.norm, self.linear = nn.LayerNorm(channels), nn.Linear(channels, dim)

    def forward(self, x):                                        # (B, C, h, w)
        x = self.linear(self.norm(x.permute(0, 2, 3, 1)))        # (B, h, w, D)
        return x.permute(0, 3, 1, 2)                             # (B, D, h, w)


class VisualEncoder(nn.Module):
    """ResNet stages 1-4 (strides 4, 8, 16, 32), each projected to D."""

    def __init__(self, cfg):
        super().__init__()
        self.net = resnet(cfg.backbone, cfg.pretrained)
        self.proj = nn.ModuleList(StageProjection(c, cfg.dim) for c in stage_channels(cfg.backbone))

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

    def __init__(self, dim, hidden, n_stages=4):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(dim, hidden, 1) for _ in range(n_stages))
        self.smooth = nn.ModuleList(nn.Conv2d(hidden, hidden, 3, padding=1) for _ in range(n_stages))
        self.towers = nn.ModuleList(
            nn.ModuleList(conv_gn_relu(hidden, hidden) for _ in range(max(1, s))) for s in range(n_stages))
        self.predict = nn.Conv2d(hidden, 1, 1)

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
        logits = self.predict(semantic)                          # (B, 1, S/4, S/4)
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)  # (B, 1, S, S)


class WSAVS(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = AudioEncoder(cfg)
        self.visual_encoder = VisualEncoder(cfg)
        if not 1 <= cfg.fusion_stages <= 4:
            raise ValueError(f"fusion_stages must be in 1..4, got {cfg.fusion_stages}")
        self.fusion = nn.ModuleList(AudioVisualFusion(cfg.dim) for _ in range(cfg.fusion_stages))
        self.decoder = MaskDecoder(cfg.dim, cfg.decoder_dim)

    def forward(self, image, audio):
        audio_embed = self.audio_encoder(audio)                  # (B, D)
        visual_maps = self.visual_encoder(image)                 # 4 x (B, D, h_s, w_s)
        k = self.cfg.fusion_stages                               # the last k stages are fused (Eq. 1)
        fused_maps = visual_maps[:4 - k] + [fuse(v, audio_embed) for fuse, v in zip(self.fusion, visual_maps[4 - k:])]
        mask_logits = self.decoder(fused_maps, image.shape[-2:])  # (B, 1, S, S); M = sigmoid(mask_logits)
        return {"mask_logits": mask_logits, "audio_embed": audio_embed, "visual_maps": visual_maps[4 - k:]}

    @torch.no_grad()
    def predict(self, image, audio):
        return torch.sigmoid(self(image, audio)["mask_logits"])  # (B, 1, S, S)


# ---------------------------------------------------------------------------------------------
# 4. M2ICL, Eq. 3-5: sim(a_i, v_m^s) = max over positions of cos(a_i, v_m^s[:, p]), tau, both directions

def m2icl_loss(audio_embed, visual_maps, video_ids, tau, gather=None):
    """audio_embed (B, D); visual_maps S x (B, D, h_s, w_s); video_ids (B,) ints.
    Choice: the paper takes every other item of the batch as a negative; two frames of the same video
    are false negatives, so their logits are masked out (the positive pair itself is kept).
    gather (several processes): x -> (x of every rank concatenated, with gradients; where this rank's rows
    start). Each rank then scores its own B items against all N B, so N processes with batch B train
    like one with batch N B."""
    audio = F.normalize(audio_embed, dim=1)
    all_video_ids, offset = gather(video_ids) if gather else (video_ids, 0)
    target = offset + torch.arange(len(video_ids), device=audio.device)       # (B,) the positives' columns
    positive = F.one_hot(target, len(all_video_ids)).bool()
    false_negative = (video_ids[:, None] == all_video_ids[None, :]) & ~positive  # (B, N B)
    all_audio = gather(audio)[0] if gather else audio
    loss = 0
    for visual in visual_maps:
        visual = F.normalize(visual, dim=1).to(audio.dtype)                      # (B, D, h, w)
        if gather:
            audio_to_visual = maxsim(audio, gather(visual)[0], backend="auto")       # (B, N B)
            visual_to_audio = maxsim(all_audio, visual, backend="auto").t()          # (B, N B)
        else:
            audio_to_visual = maxsim(audio, visual, backend="auto")                  # (B, B)
            visual_to_audio = audio_to_visual.t()
        for logits in (audio_to_visual, visual_to_audio):                            # Eq. 3, Eq. 4
            loss = loss + F.cross_entropy((logits / tau).masked_fill(false_negative, float("-inf")), target)
    return loss                                                  # Eq. 5: summed over stages, mean over i


def localization_map(audio_embed, visual_maps, size):
    """cos(a_i, v_i^s[:, p]) at every position: the map whose max M2ICL takes, averaged over the stages
    after upsampling to `size`, then min-max normalised per image -> (B, 1, *size) in [0, 1]."""
    audio = F.normalize(audio_embed, dim=1)
    cos = [torch.einsum("bd,bdhw->bhw", audio, F.normalize(v, dim=1))[:, None] for v in visual_maps]
    mean = sum(F.interpolate(c, size=size, mode="bilinear", align_corners=False) for c in cos) / len(cos)
    return minmax_normalise(mean)


def minmax_normalise(x):
    """Per image: (x - min) / (max - min) over the spatial dims of (B, C, h, w)."""
    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    return (x - low) / (high - low).clamp_min(1e-6)


# ---------------------------------------------------------------------------------------------
# 5. Pseudo mask refinement (section 3.3): C2AM class-agnostic map A, a saliency head S trained on
#    A's background cues, and the pseudo mask of Eq. 6. Trained before WS-AVS, with its own encoder.

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
        self.register_buffer("flip_polarity", torch.zeros((), dtype=torch.bool))  # set by check_polarity
        self.saliency_head = MaskDecoder(cfg.dim, cfg.decoder_dim)

    def features(self, image):
        visual_maps = self.visual_encoder(image)                 # 4 x (B, D, h_s, w_s)
        return visual_maps, summed_at_stride_8(visual_maps)      # (B, D, S/8, S/8)

    def activation(self, features):
        act = torch.sigmoid(self.activation_head(features))      # (B, 1, S/8, S/8), A in [0, 1]
        return torch.where(self.flip_polarity, 1 - act, act)

    def forward(self, image):
        visual_maps, features = self.features(image)
        return {"features": features, "activation": self.activation(features),
                "saliency_logits": self.saliency_head(visual_maps, image.shape[-2:])}  # (B, 1, S, S)

    def border_activation(self, activation, image_size):
        """Mean activation on a border band 4 px wide at 224 px (scaled with the input size)."""
        act = F.interpolate(activation, size=image_size, mode="bilinear", align_corners=False)
        band = max(1, round(4 * image_size[0] / 224))
        inner = torch.zeros_like(act, dtype=torch.bool)
        inner[..., band:-band, band:-band] = True
        return act[~inner.expand_as(act)].mean()

    @torch.no_grad()
    def pseudo_mask(self, image):
        """The binary pseudo mask of each image, (B, 1, S, S)."""
        out = self(image)
        activation = F.interpolate(out["activation"], size=image.shape[-2:], mode="bilinear", align_corners=False)
        return refine_pseudo_mask(activation, torch.sigmoid(out["saliency_logits"]))

    def predict(self, image, audio):
        """The C2AM baseline of Table 1: the Eq. 6 pseudo mask itself; it never hears the audio."""
        return self.pseudo_mask(image)


def refine_pseudo_mask(activation, saliency):
    """Eq. 6: Y_hat = L[argmax([S_bg; A])] with labels L = [0; 1] for (background cue, class-agnostic map).
    The background cue is 1 - saliency, so a pixel is foreground iff A > 1 - S. Both (B, 1, S, S)."""
    return (activation > 1 - saliency).float()


def _pairwise_cos(x, y):
    return (F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()).clamp(5e-4, 0.9995)  # (B, B)


def sim_max(x, rank_weight=0.25):
    """C2AM SimMax: -log cos over pairs of one kind, each pair weighted exp(-0.25 * rank), rank 0 =
    the most similar other sample of the row. Choice: self-pairs (cos = 1 by construction) are left out."""
    cos = _pairwise_cos(x, x)
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    cos_others = cos.masked_fill(~off_diagonal, -1.0)
    rank = cos_others.argsort(dim=1, descending=True).argsort(dim=1).float()  # (B, B), self ranks last
    weight = torch.exp(-rank_weight * rank)
    return (-torch.log(cos) * weight)[off_diagonal].mean()


def sim_min(x, y):
    """C2AM SimMin: -log(1 - cos) over all foreground-background pairs."""
    return -torch.log(1 - _pairwise_cos(x, y)).mean()


def c2am_loss(features, activation):
    """features (B, D, h, w), activation A (B, 1, h, w): contrast foreground and background features."""
    hw = features.shape[-2] * features.shape[-1]
    foreground = (activation * features).sum(dim=(2, 3)) / hw        # (B, D)
    background = ((1 - activation) * features).sum(dim=(2, 3)) / hw  # (B, D)
    return sim_max(foreground) + sim_min(foreground, background) + sim_max(background)


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
    """Addition to C2AM (choice, after SEAM, Wang et al. CVPR 2020): the map of a zoomed/flipped image must be
    the zoomed/flipped map. From random init C2AM otherwise splits frames by position (left vs right),
    which the padding makes easy to contrast; a position split cannot be equivariant."""
    return (warp(activation, theta) - warped_activation).abs().mean()


def saliency_loss(saliency_logits, activation, threshold):
    """Train the saliency head on A's cues: A is min-max normalised per image (as in C2AM's cue extraction),
    pixels below the threshold are background (0), the others foreground (1)."""
    activation = F.interpolate(minmax_normalise(activation), size=saliency_logits.shape[-2:], mode="bilinear", align_corners=False)
    return F.binary_cross_entropy_with_logits(saliency_logits, (activation >= threshold).float())


# ---------------------------------------------------------------------------------------------
# 6. Training losses: L_pmr = BCE(M, Y_hat) (Eq. 7), L = L_avf + L_pmr (Eq. 8)

def audio_specific(audio_embed, all_audio):
    """Unit audio embeddings minus the mean unit embedding of the batch's sounds all_audio (N, D).
    The M2ICL map of any sound is high on every object: that part of cos(a_i, v) is shared by all sounds.
    What a sound has that the batch's other sounds lack points at its own object. (B, D) -> (B, D)."""
    return F.normalize(audio_embed, dim=1) - F.normalize(all_audio, dim=1).mean(dim=0, keepdim=True)


def audio_gated_pseudo_mask(pseudo_mask, audio_embed, visual_maps, all_audio, threshold=0.5):
    """Addition to the paper (choice): Eq. 6 masks do not depend on the audio, so on a frame with silent
    objects they mark those too. We keep only the pseudo-mask pixels where the model's own (detached) M2ICL
    localization map of the audio_specific embedding, normalised per image, reaches the threshold.
    Which stages: the max of Eq. 3 can settle on background patches at some stages (they tell videos apart
    too), and which stages do that changes from run to run; gating with such a map empties the targets and
    the decoder collapses to empty masks. So each stage is weighted by how much higher its plain map is on
    the pseudo-foreground than off it in that image (0 if not higher), and an image where no stage points
    at the pseudo-foreground, or whose audio-specific map is flat, keeps its whole pseudo mask.
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
    return pseudo_mask * torch.where(pointed[:, None, None, None], (localization >= threshold).float(), 1.0)


def avm_loss(mask_logits, visual, audio_embed):
    """AVSBench's audio-visual matching regulariser, the only loss of the avs-ws baseline: KL divergence
    between the audio embedding and the mask-pooled visual map, each softmaxed over channels.
    mask_logits (B, 1, S, S), visual (B, D, h, w), audio_embed (B, D)."""
    mask = F.interpolate(torch.sigmoid(mask_logits), size=visual.shape[-2:], mode="bilinear", align_corners=False)
    pooled = (mask * visual).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp_min(1e-6)       # (B, D)
    return F.kl_div(F.log_softmax(pooled, dim=1), F.log_softmax(audio_embed, dim=1), log_target=True,
                    reduction="batchmean")


def wsavs_loss(out, pseudo_mask, video_ids, tau, avf=True, pmr=True, gather=None):
    """Eq. 8, with the Table 2 switches: without AVF there is no M2ICL and no localization map to gate the
    pseudo masks with; without PMR the decoder's only signal is avs-ws's matching loss."""
    parts = {}
    if avf:
        parts["avf"] = m2icl_loss(out["audio_embed"], out["visual_maps"], video_ids, tau, gather)  # Eq. 5
    if pmr:
        if avf:
            audio = out["audio_embed"].detach()
            pseudo_mask = audio_gated_pseudo_mask(pseudo_mask, audio, [v.detach() for v in out["visual_maps"]],
                                                  gather(audio)[0] if gather else audio)
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
        self.visual_encoder = VisualEncoder(cfg)

    def forward(self, image, audio):
        return {"audio_embed": self.audio_encoder(audio), "visual_maps": self.visual_encoder(image)[-1:]}

    @torch.no_grad()
    def predict(self, image, audio):
        out = self(image, audio)
        return localization_map(out["audio_embed"], out["visual_maps"], image.shape[-2:])
