"""The method in wsavs.py: shapes through the model, Eq. 1, and each loss on cases with known answers."""
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import wsavs
from wsavs import (EZVSL, WSAVS, AudioVisualFusion, CAMNet, PseudoMaskNet, audio_gated_pseudo_mask, audio_specific,
                   avm_loss, border_activation, c2am_loss, c2am_step_loss, class_agnostic_map, connected_components, dense_crf, equivariance_loss, localization_map,
                   m2icl_loss, per_object_mean, preset_config, pseudo_masks, random_affine, refine_pseudo_mask, saliency_targets, sim_max,
                   sim_min, warp, wsavs_loss)


def small_config(**kw):
    """The small preset (random init, with its additions) at a tiny width."""
    return preset_config("small", **{"dim": 32, "decoder_dim": 16, **kw})


@pytest.mark.parametrize("backbone,size,batch", [("resnet18", 64, 2), ("resnet18", 80, 3), ("resnet18", 70, 1),
                                                 ("resnet50", 64, 2)])
def test_model_shapes(backbone, size, batch):
    torch.manual_seed(0)
    model = WSAVS(small_config(backbone=backbone, img_size=size)).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 3, size, size), torch.randn(batch, 1, 257, 300))
    assert out["mask_logits"].shape == (batch, 1, size, size)
    assert out["audio_embed"].shape == (batch, 32)
    sizes = [tuple(v.shape) for v in out["visual_maps"]]
    expected = [math.ceil(size / 4)]
    for _ in range(3):
        expected.append(math.ceil(expected[-1] / 2))
    assert sizes == [(batch, 32, e, e) for e in expected]
    assert torch.isfinite(out["mask_logits"]).all()


def test_mask_depends_on_audio():
    torch.manual_seed(0)
    model = WSAVS(small_config(img_size=64)).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = model(image, torch.randn(1, 1, 257, 300))["mask_logits"]
        b = model(image, torch.randn(1, 1, 257, 300))["mask_logits"]
    assert (a - b).abs().max() > 1e-4


def test_fusion_equals_explicit_non_local_block():
    """Eq. 1 with the hw x hw affinity written out, audio tiled over every position."""
    torch.manual_seed(1)
    fusion = AudioVisualFusion(8)
    visual, audio = torch.randn(2, 8, 3, 5), torch.randn(2, 8)
    hw = 15
    theta = fusion.theta(visual).flatten(2).transpose(1, 2)                # (B, hw, 4)
    omega = fusion.omega(visual).flatten(2).transpose(1, 2)                # (B, hw, 4)
    phi = fusion.phi(audio)[:, None, :].expand(2, hw, 4)                   # tiled audio, (B, hw, 4)
    attended = (theta @ phi.transpose(1, 2)) / hw @ omega                  # (B, hw, 4)
    expected = visual + fusion.mu(attended.transpose(1, 2).reshape(2, 4, 3, 5))
    torch.testing.assert_close(fusion(visual, audio), expected, rtol=1e-5, atol=1e-5)


def test_m2icl_known_answer():
    # audio i matches visual i at exactly one position (cos 1) and is orthogonal to the other sample
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    visual = torch.tensor([[[1.0, -1.0], [0.0, 0.0]],                      # sample 0: positions e0, -e0
                           [[0.0, 0.0], [1.0, 0.5]]])                      # sample 1: e1, e1/2
    tau = 0.5
    loss = m2icl_loss(audio, [visual], torch.tensor([0, 1]), tau)
    # logits = [[1, 0], [0, 1]] / tau in both directions
    assert loss.item() == pytest.approx(2 * math.log(1 + math.exp(-1 / tau)), rel=1e-6)
    # two stages add up
    assert m2icl_loss(audio, [visual, visual], torch.tensor([0, 1]), tau).item() == pytest.approx(2 * loss.item())


@pytest.mark.parametrize("mask_same_video", [False, True])
def test_m2icl_masks_frames_of_the_same_video(mask_same_video):
    audio = torch.tensor([[1.0, 0.0], [1.0, 0.0]])      # two frames of one video, identical
    visual = torch.tensor([[[1.0], [0.0]], [[1.0], [0.0]]])
    same = m2icl_loss(audio, [visual], torch.tensor([3, 3]), 0.1, mask_same_video=mask_same_video)
    different = m2icl_loss(audio, [visual], torch.tensor([3, 4]), 0.1, mask_same_video=mask_same_video)
    # masked, only the positive is left; the paper's loss keeps the other frame as a negative: log 2 per row
    assert same.item() == pytest.approx(0.0 if mask_same_video else 2 * math.log(2), abs=1e-6)
    assert different.item() == pytest.approx(2 * math.log(2), rel=1e-6)    # log 2 per row, both directions


def test_m2icl_gradients_flow_to_both_inputs():
    torch.manual_seed(0)
    audio = torch.randn(4, 8, requires_grad=True)
    visual = torch.randn(4, 8, 3, 3, requires_grad=True)
    m2icl_loss(audio, [visual], torch.arange(4), 0.03).backward()
    assert audio.grad.abs().sum() > 0 and visual.grad.abs().sum() > 0


@pytest.mark.parametrize("self_pairs", [False, True])
def test_sim_max_and_sim_min_known_answers(self_pairs):
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # off-diagonal cosines: rows 0/1 see (1, 0), row 2 sees (0, 0); clamped to [5e-4, 0.9995];
    # ranks among the others: 0 for the most similar, 1 for the next (ties broken by index)
    hi, lo = -math.log(0.9995), -math.log(5e-4)
    w1 = math.exp(-0.25)
    others = hi + lo * w1 + hi + lo * w1 + lo + lo * w1
    # CCAM's self-pairs: cos clamped to 0.9995, rank -1 (weight e^0.25), in a mean over all 9 pairs
    expected = (others + 3 * hi * math.exp(0.25)) / 9 if self_pairs else others / 6
    assert sim_max(x, self_pairs).item() == pytest.approx(expected, rel=1e-5)
    y = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    # cos(x_i, y_j): 0 for rows 0, 1 and 1 for row 2 -> -log(1 - 5e-4) and -log(1 - 0.9995)
    assert sim_min(x, y).item() == pytest.approx((6 * -math.log(1 - 5e-4) + 3 * -math.log(5e-4)) / 9, rel=1e-5)


def test_self_pairs_add_no_gradient():
    x = torch.randn(5, 8, requires_grad=True)
    grad_without = torch.autograd.grad(sim_max(x, self_pairs=False), x)[0]
    grad_with = torch.autograd.grad(sim_max(x, self_pairs=True), x)[0]
    torch.testing.assert_close(grad_with, grad_without * 20 / 25)       # same pairs, mean over 25 instead of 20


@pytest.mark.parametrize("self_pairs", [False, True])
def test_c2am_loss_separated_foreground_background(self_pairs):
    # left half of every image is feature e0, right half e1; the map says "left is foreground"
    features = torch.zeros(3, 2, 4, 4)
    features[:, 0, :, :2] = 1.0
    features[:, 1, :, 2:] = 1.0
    activation = torch.zeros(3, 1, 4, 4)
    activation[..., :2] = 1.0
    hi, lo = -math.log(0.9995), -math.log(1 - 5e-4)
    # fg/fg and bg/bg pairs at cos 1, each row's two others weighted exp(0) and exp(-0.25) (and itself
    # exp(0.25)); fg/bg at cos 0
    same = (math.exp(0.25) + 1 + math.exp(-0.25)) / 3 if self_pairs else (1 + math.exp(-0.25)) / 2
    expected = 2 * hi * same + lo
    assert c2am_loss(features, activation, self_pairs).item() == pytest.approx(expected, rel=1e-4)
    # the flipped map gives the same loss: polarity is not decided by the loss, hence the check
    assert c2am_loss(features, 1 - activation, self_pairs).item() == pytest.approx(expected, rel=1e-4)


def test_saliency_targets_without_crf_are_the_thresholded_normalised_map():
    image = torch.zeros(1, 3, 2, 2)
    for activation in ([0.0, 0.29, 0.31, 1.0], [0.2, 0.3, 0.5, 0.6]):  # the second normalises to the first
        activation = torch.tensor(activation).reshape(1, 1, 2, 2)
        targets = saliency_targets(image, activation, 0.3, crf_iterations=0)
        assert targets.flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("size", [48, 64])
def test_dense_crf_snaps_a_halo_to_the_object(size):
    """A red square on a grey background; the unary says foreground (0.8) on a disc twice the square's width.
    The fully connected CRF gives the halo back to the background it looks like, and keeps the square."""
    rgb = torch.full((1, 3, size, size), 120.0) + torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    square = torch.zeros(1, 1, size, size, dtype=torch.bool)
    square[..., size // 3:2 * size // 3, size // 3:2 * size // 3] = True
    rgb[:, 0][square[:, 0]], rgb[:, 1][square[:, 0]], rgb[:, 2][square[:, 0]] = 230.0, 30.0, 30.0
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5 - size / 2, torch.arange(size) + 0.5 - size / 2, indexing="ij")
    disc = (ys ** 2 + xs ** 2 <= (size / 3) ** 2)[None, None]
    unary = torch.where(disc, 0.8, 0.2)
    assert (disc & ~square).sum() > square.sum()                          # the halo is bigger than the object
    refined = dense_crf(rgb, unary, iterations=10, size=size) > 0.5
    iou = (refined & square).sum() / (refined | square).sum()
    assert iou > 0.9
    torch.testing.assert_close(dense_crf(rgb, unary, iterations=0, size=size), unary)


def test_saliency_targets_with_crf_follow_the_frame():
    """Normalised, the frame's own colours decide the cue's edge: only the square stays foreground."""
    size = 48
    image = torch.zeros(1, 3, size, size)                                 # ImageNet-normalised grey-ish frame
    image[..., 16:32, 16:32] = torch.tensor([2.0, -1.5, -1.5])[:, None, None]
    activation = torch.zeros(1, 1, size // 8, size // 8)
    activation[..., 1:5, 1:5] = 1.0                                       # a coarse blob 2/3 of the frame wide
    plain = saliency_targets(image, activation, 0.3, crf_iterations=0)
    refined = saliency_targets(image, activation, 0.3, crf_iterations=10)
    assert plain.sum() > 2 * 16 * 16 and refined[..., 16:32, 16:32].all() and refined.sum() == 16 * 16


def test_eq6_pseudo_mask_rule():
    activation = torch.tensor([0.6, 0.4, 0.9, 0.2]).reshape(1, 1, 2, 2)
    saliency = torch.tensor([0.5, 0.5, 0.05, 0.9]).reshape(1, 1, 2, 2)
    # foreground iff A > 1 - S: 0.6 > 0.5, 0.4 < 0.5, 0.9 < 0.95, 0.2 > 0.1
    assert refine_pseudo_mask(activation, saliency).flatten().tolist() == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("channel_shuffle", [False, True])
def test_pseudo_mask_net_shapes_and_polarity_flag(channel_shuffle):
    torch.manual_seed(0)
    net = PseudoMaskNet(small_config(img_size=64, channel_shuffle=channel_shuffle)).eval()
    image = torch.randn(2, 3, 64, 64)
    _, activation = class_agnostic_map(net, image)
    assert activation.shape == (2, 1, 8, 8)
    mask = pseudo_masks(net, image)
    assert mask.shape == (2, 1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}
    net.flip_polarity.fill_(True)
    torch.testing.assert_close(class_agnostic_map(net, image)[1], 1 - activation)
    assert net.state_dict()["flip_polarity"].item() is True


def test_channel_shuffled_map_is_applied_as_its_mean_over_channel_orders():
    """Trained on frames in random channel orders, the map is used as its mean over the 6 orders: the same
    for every order of the input's channels; without the shuffle it is the plain map."""
    torch.manual_seed(0)
    image = torch.randn(2, 3, 64, 64)
    shuffled = PseudoMaskNet(small_config(img_size=64, channel_shuffle=True)).eval()
    plain = PseudoMaskNet(small_config(img_size=64, channel_shuffle=False)).eval()
    plain.load_state_dict(shuffled.state_dict())
    with torch.no_grad():
        maps = [class_agnostic_map(shuffled, image[:, order])[1] for order in ([0, 1, 2], [2, 0, 1], [1, 0, 2])]
        plain_maps = [class_agnostic_map(plain, image[:, order])[1] for order in ([0, 1, 2], [2, 0, 1])]
    torch.testing.assert_close(maps[1], maps[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps[2], maps[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(plain_maps[0], plain_maps[1])
    assert not torch.allclose(plain_maps[0], maps[0])


@pytest.mark.parametrize("equivariance", [0.0, 10.0])
def test_c2am_step_adds_warped_copies_only_with_the_equivariance_loss(equivariance):
    """equivariance 0 is plain C2AM: the encoder sees the batch's B frames, no warped copies."""
    torch.manual_seed(0)
    net = PseudoMaskNet(small_config(img_size=64, equivariance=equivariance, channel_shuffle=False))
    seen = []
    net.visual_encoder.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    image = torch.randn(3, 3, 64, 64)
    torch.manual_seed(1)
    loss, activation = c2am_step_loss(net, image)
    assert seen == [6 if equivariance else 3] and activation.shape == (3, 1, 8, 8)
    torch.manual_seed(1)
    _, features = net.features(image)
    plain = c2am_loss(features, net.activation(features), net.cfg.c2am_self_pairs)
    if equivariance:
        assert loss.item() != pytest.approx(plain.item())
    else:
        assert loss.item() == pytest.approx(plain.item(), rel=1e-6)


def test_border_activation():
    act = torch.zeros(1, 1, 28, 28)
    act[..., :1, :] = 1.0                                 # top row of the 28 x 28 map
    border = border_activation(act, (224, 224)).item()
    assert 0.2 < border < 0.3                             # the top side is lit: about a quarter of the band
    assert border_activation(torch.ones(1, 1, 28, 28), (224, 224)).item() == pytest.approx(1.0)


def test_wsavs_loss_is_sum_of_parts():
    torch.manual_seed(0)
    model = WSAVS(small_config(img_size=64))
    out = model(torch.randn(3, 3, 64, 64), torch.randn(3, 1, 257, 300))
    pseudo = (torch.rand(3, 1, 64, 64) > 0.5).float()
    loss, parts = wsavs_loss(out, pseudo, torch.arange(3), small_config(img_size=64, pseudo_gate="audio"))
    assert loss.item() == pytest.approx((parts["avf"] + parts["pmr"]).item(), rel=1e-6)
    audio = out["audio_embed"].detach()
    gated = audio_gated_pseudo_mask(pseudo, audio, [v.detach() for v in out["visual_maps"]], audio)
    assert 0 < gated.sum() < pseudo.sum()
    assert parts["pmr"].item() == pytest.approx(F.binary_cross_entropy_with_logits(out["mask_logits"], gated).item())
    loss.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


@pytest.mark.parametrize("avf,pmr,parts_expected", [(True, True, {"avf", "pmr"}), (False, True, {"pmr"}),
                                                    (True, False, {"avf", "avm"}), (False, False, {"avm"})])
def test_wsavs_loss_table2_switches(avf, pmr, parts_expected):
    torch.manual_seed(0)
    model = WSAVS(small_config(img_size=64))
    out = model(torch.randn(3, 3, 64, 64), torch.randn(3, 1, 257, 300))
    pseudo = (torch.rand(3, 1, 64, 64) > 0.5).float()
    loss, parts = wsavs_loss(out, pseudo if pmr else None, torch.arange(3), small_config(img_size=64), avf=avf, pmr=pmr)
    assert set(parts) == parts_expected
    assert loss.item() == pytest.approx(sum(parts.values()).item(), rel=1e-6)
    if pmr and not avf:                                   # no M2ICL map to gate with: the Eq. 6 mask as is
        assert parts["pmr"].item() == pytest.approx(
            F.binary_cross_entropy_with_logits(out["mask_logits"], pseudo).item())
    loss.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_fusion_stages_fuse_and_contrast_the_last_k(stages):
    torch.manual_seed(0)
    model = WSAVS(small_config(img_size=64, fusion_stages=stages)).eval()
    image, audio = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 257, 300)
    with torch.no_grad():
        out = model(image, audio)
        all_maps = model.visual_encoder(image)
        other = model(image, torch.randn(2, 1, 257, 300))["mask_logits"]
    assert len(model.fusion) == stages
    assert [v.shape for v in out["visual_maps"]] == [v.shape for v in all_maps[4 - stages:]]
    assert (out["mask_logits"] - other).abs().max() > 1e-5   # the audio still reaches the mask


def test_localization_map_known_answer():
    audio = torch.tensor([[1.0, 0.0]])
    visual = torch.zeros(1, 2, 3, 4)
    visual[:, 1] = 1.0
    visual[0, :, 1, 2] = torch.tensor([2.0, 0.0])          # cos 1 here, cos 0 elsewhere
    expected = torch.zeros(1, 1, 3, 4)
    expected[0, 0, 1, 2] = 1.0
    torch.testing.assert_close(localization_map(audio, [visual], (3, 4)), expected)
    # two stages are averaged: the same map twice gives the same answer
    torch.testing.assert_close(localization_map(audio, [visual, visual], (3, 4)), expected)


def stage_with_cosines(cosines):
    """(1, 2, 2, 2) visual map whose cosine with the audio [1, 0] is `cosines` (4 values, row-major)."""
    c = torch.tensor(cosines)
    return torch.stack([c, (1 - c ** 2).sqrt()]).reshape(1, 2, 2, 2)


OTHER_SOUNDS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # audio_specific([1, 0]) = [0.5, -0.5]


def test_audio_specific_known_answer():
    audio = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    torch.testing.assert_close(audio_specific(audio, audio), torch.tensor([[0.5, -0.5], [-0.5, 0.5]]))
    torch.testing.assert_close(audio_specific(audio[:1], OTHER_SOUNDS), torch.tensor([[0.5, -0.5]]))
    assert audio_specific(audio[:1], audio[:1]).abs().max() == 0   # one sound alone: nothing specific


def test_audio_gate_keeps_pseudo_mask_pixels_the_audio_points_at():
    audio = torch.tensor([[1.0, 0.0]])
    pseudo = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    on_objects = stage_with_cosines([0.1, 0.6, 0.9, 0.0])     # plain map higher on the mask; specific map
    on_background = stage_with_cosines([0.0, 0.0, 0.0, 1.0])  # 0.07, 0.55, 1, 0. Highest off the mask: weight 0
    expected = [0.0, 1.0, 1.0, 0.0]
    for stages in ([on_objects], [on_objects, on_background], [on_background, on_objects]):
        assert audio_gated_pseudo_mask(pseudo, audio, stages, OTHER_SOUNDS).flatten().tolist() == expected
    # no stage points at the pseudo-foreground, or a lone sound with nothing specific: the whole pseudo mask
    assert audio_gated_pseudo_mask(pseudo, audio, [on_background], OTHER_SOUNDS).flatten().tolist() == [1, 1, 1, 0]
    assert audio_gated_pseudo_mask(pseudo, audio, [on_objects], audio).flatten().tolist() == [1, 1, 1, 0]


def test_audio_gate_weights_stages_per_image():
    audio = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    pseudo = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]]).reshape(2, 1, 2, 2)
    first = torch.cat([stage_with_cosines([0.1, 0.6, 0.9, 0.0]), stage_with_cosines([0.9, 0.2, 0.0, 0.1])])
    second = torch.cat([stage_with_cosines([0.0, 0.0, 0.0, 1.0]), stage_with_cosines([0.0, 0.1, 0.3, 1.0])])
    gated = audio_gated_pseudo_mask(pseudo, audio, [first, second], OTHER_SOUNDS)
    # image 0 follows stage 1 alone; image 1 follows stage 2 (stage 1 is highest off its mask there)
    assert gated.flatten().tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    for image in range(2):
        alone = audio_gated_pseudo_mask(pseudo[image:image + 1], audio[image:image + 1],
                                        [first[image:image + 1], second[image:image + 1]], OTHER_SOUNDS)
        assert torch.equal(alone, gated[image:image + 1])


def test_audio_gate_keeps_the_object_of_the_sound_not_the_silent_one():
    """Two objects share a direction (0) with every sound; each also has its own (1 or 2). The plain map of
    either sound is high on both objects; the gate keeps only the object of the frame's own sound."""
    objects = torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # A, B, bg, bg
    visual = objects.t().reshape(1, 3, 2, 2).repeat(2, 1, 1, 1)       # the same frame twice
    sounds = torch.tensor([[1.0, 0.3, 0.0], [1.0, 0.0, 0.3]])        # the sound of A, the sound of B
    pseudo = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    plain = localization_map(sounds, [visual], (2, 2)).flatten(1)
    assert (plain[:, :2] > 0.8).all()                                 # the plain maps keep both objects
    gated = audio_gated_pseudo_mask(pseudo, sounds, [visual], sounds).flatten(1)
    assert gated.tolist() == [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    swapped = audio_gated_pseudo_mask(pseudo, sounds.flip(0), [visual], sounds).flatten(1)
    assert swapped.tolist() == gated.flip(0).tolist()                 # swap the sounds, swap the masks


@pytest.mark.parametrize("shape", [(1, 1, 6, 7), (3, 1, 9, 5)])
def test_connected_components_match_a_flood_fill(shape):
    mask = (torch.rand(shape, generator=torch.Generator().manual_seed(shape[2])) > 0.55).float()
    labels = connected_components(mask)
    assert ((labels > 0) == (mask > 0)).all()
    for b in range(shape[0]):                      # flood fill, 8-connected, from every pixel of the mask
        grid = mask[b, 0].bool().tolist()
        seen = {}
        for start in [(y, x) for y in range(shape[2]) for x in range(shape[3]) if grid[y][x]]:
            if start in seen:
                continue
            stack, members = [start], []
            seen[start] = True
            while stack:
                y, x = stack.pop()
                members.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        n = (y + dy, x + dx)
                        if 0 <= n[0] < shape[2] and 0 <= n[1] < shape[3] and grid[n[0]][n[1]] and n not in seen:
                            seen[n] = True
                            stack.append(n)
            values = {labels[b, 0, y, x].item() for y, x in members}
            assert values == {max(y * shape[3] + x + 1 for y, x in members)}


def test_object_gate_keeps_whole_objects():
    """The audio map is coarse: it reaches the threshold on the sounding object (left) and on the near half of
    a silent one (right). Per pixel the gate keeps that half; per object it keeps the left object whole, and
    drops the right one, whose mean is below the threshold."""
    pseudo = torch.zeros(2, 1, 4, 8)
    pseudo[:, :, 1:3, 0:3] = 1
    pseudo[:, :, 1:3, 5:8] = 1
    localization = torch.zeros(2, 1, 4, 8)
    localization[:, :, :, 0:6] = 0.9                                # spills onto column 5 of the right object
    localization[1] = 0.0                                           # second image: nothing reaches the threshold
    means = per_object_mean(localization, pseudo)
    assert means[0, 0, 1, 0].item() == 1.0 and means[0, 0, 1, 5].item() == pytest.approx(0.3)
    assert means[1, 0, 1:3, 0:3].eq(1).all() != means[1, 0, 1:3, 5:8].eq(1).all()  # its best object is kept whole
    kept = (means >= 0.5) & (pseudo > 0)
    assert kept[0, 0].sum() == 6 and kept[0, 0, 1:3, 0:3].all()
    assert ((localization >= 0.5) & (pseudo > 0))[0, 0, 1:3, 5].all()    # the per-pixel gate keeps the spill


def test_audio_gate_per_object_through_the_model_maps():
    """Same frames as the two-object case below, per object: each sound keeps its own object, whole."""
    objects = torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    visual = objects.t().reshape(1, 3, 2, 2).repeat(2, 1, 1, 1)
    sounds = torch.tensor([[1.0, 0.3, 0.0], [1.0, 0.0, 0.3]])
    pseudo = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)   # one object: A and a bg pixel
    gated = audio_gated_pseudo_mask(pseudo, sounds, [visual], sounds, per_object=True).flatten(1)
    assert gated.tolist() == [[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]]  # a single object is always kept whole


def test_avm_loss_known_answers():
    audio = torch.tensor([[1.0, 2.0, 0.5]])
    visual = audio[:, :, None, None].expand(1, 3, 4, 4).clone()       # every position equals the audio
    logits = torch.randn(1, 1, 16, 16)
    assert avm_loss(logits, visual, audio).item() == pytest.approx(0.0, abs=1e-6)
    visual[:, :, :2] = 0.0                                # top half zero; a mask on the bottom half pools the audio
    bottom = torch.full((1, 1, 16, 16), -30.0)
    bottom[..., 8:, :] = 30.0
    assert avm_loss(bottom, visual, audio).item() == pytest.approx(0.0, abs=1e-5)
    top = -bottom                                         # pools zeros: KL(audio || uniform)
    p = F.softmax(audio, dim=1)
    expected = (p * (p.log() + math.log(3))).sum().item()
    assert avm_loss(top, visual, audio).item() == pytest.approx(expected, rel=1e-4)


def test_cam_baseline_shapes_loss_and_mask():
    torch.manual_seed(0)
    net = CAMNet(small_config(img_size=64), num_classes=5)
    image = torch.randn(3, 3, 64, 64)
    out = net(image)
    assert out["class_maps"].shape == (3, 5, 8, 8) and out["class_logits"].shape == (3, 5)
    loss = F.cross_entropy(out["class_logits"], torch.tensor([0, 3, 4]))
    loss.backward()
    assert net.classifier.weight.grad.abs().sum() > 0
    net.eval()
    mask = net.predict(image, None)
    assert mask.shape == (3, 1, 64, 64)
    assert mask.amin(dim=(2, 3)).flatten().tolist() == pytest.approx([0.0] * 3, abs=1e-6)
    assert mask.amax(dim=(2, 3)).flatten().tolist() == pytest.approx([1.0] * 3, abs=1e-6)


def test_ezvsl_baseline_contrasts_the_last_stage_and_maps_it():
    torch.manual_seed(0)
    net = EZVSL(small_config(img_size=64))
    image, audio = torch.randn(3, 3, 64, 64), torch.randn(3, 1, 257, 300)
    out = net(image, audio)
    assert [v.shape for v in out["visual_maps"]] == [(3, 32, 2, 2)]
    loss = m2icl_loss(out["audio_embed"], out["visual_maps"], torch.arange(3), 0.03)
    loss.backward()
    assert net.audio_encoder.proj[-1].weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        out = net(image, audio)
    torch.testing.assert_close(net.predict(image, audio),
                               localization_map(out["audio_embed"], out["visual_maps"], (64, 64)))


def test_c2am_baseline_predicts_the_pseudo_mask():
    torch.manual_seed(0)
    net = PseudoMaskNet(small_config(img_size=64)).eval()
    image = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(net.predict(image, torch.randn(2, 1, 257, 300)), pseudo_masks(net, image))


def test_random_affine_crops_inside_the_frame():
    theta = random_affine(500, torch.Generator().manual_seed(0))
    linear, shift = theta[:, :, :2], theta[:, :, 2]
    scale = linear.det().abs().sqrt()                      # scale x a flip / quarter turn
    assert scale.min() >= 0.5 - 1e-6 and scale.max() <= 1 + 1e-6
    torch.testing.assert_close(linear @ linear.transpose(1, 2), scale[:, None, None] ** 2 * torch.eye(2).expand(500, 2, 2))
    assert (shift.abs() <= (1 - scale)[:, None] + 1e-6).all()
    assert (linear.det() < 0).float().mean().item() == pytest.approx(0.5, abs=0.1)  # half mirrored


def test_warp_and_equivariance_loss():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    mirror = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    torch.testing.assert_close(warp(x, identity), x)
    torch.testing.assert_close(warp(x, mirror), x.flip(-1))
    # a map lit on whatever is at the left of the frame is not mirror-equivariant: the loss sees it
    left = torch.zeros(1, 1, 4, 4)
    left[..., :2] = 1.0
    assert equivariance_loss(left, left, mirror).item() == pytest.approx(1.0)
    assert equivariance_loss(left, left.flip(-1), mirror).item() == pytest.approx(0.0)


def test_recipe_switches_of_wsavs_loss():
    """pseudo_gate none trains on the Eq. 6 mask as is; avf_weight scales L_avf; mask_same_video changes the
    M2ICL loss when two frames of one video share the batch."""
    torch.manual_seed(0)
    cfg = small_config(img_size=64)
    out = WSAVS(cfg)(torch.randn(4, 3, 64, 64), torch.randn(4, 1, 257, 300))
    pseudo = (torch.rand(4, 1, 64, 64) > 0.5).float()
    videos = torch.tensor([0, 1, 0, 2])
    _, gated = wsavs_loss(out, pseudo, videos, cfg)
    _, plain = wsavs_loss(out, pseudo, videos, replace(cfg, pseudo_gate="none"))
    assert plain["pmr"].item() == pytest.approx(F.binary_cross_entropy_with_logits(out["mask_logits"], pseudo).item())
    assert gated["pmr"].item() != pytest.approx(plain["pmr"].item())
    _, weighted = wsavs_loss(out, pseudo, videos, replace(cfg, avf_weight=0.03))
    assert weighted["avf"].item() == pytest.approx(0.03 * gated["avf"].item(), rel=1e-5)
    _, unmasked = wsavs_loss(out, pseudo, videos, replace(cfg, mask_same_video=False))
    assert unmasked["avf"].item() > gated["avf"].item()                  # one more negative per row of video 0
    _, distinct = wsavs_loss(out, pseudo, torch.arange(4), replace(cfg, mask_same_video=False))
    assert distinct["avf"].item() == pytest.approx(unmasked["avf"].item())


def test_projection_dropout_only_in_the_contrastive_models():
    cfg = preset_config("paper", backbone="resnet18", pretrained=False, audio_pretrained=False, dim=32,
                        decoder_dim=16)
    dropouts = lambda net: {m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)}
    assert dropouts(WSAVS(cfg)) == dropouts(EZVSL(cfg)) == {0.9}
    assert dropouts(PseudoMaskNet(cfg)) == dropouts(CAMNet(cfg, 3)) == {0.0}
    assert isinstance(WSAVS(cfg).audio_encoder.proj[0], torch.nn.LayerNorm)
    assert isinstance(WSAVS(small_config()).audio_encoder.proj[0], torch.nn.Identity)


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_m2icl_hands_the_kernel_half_precision_maps_under_autocast(monkeypatch, amp):
    arrived, real = [], wsavs.maxsim
    monkeypatch.setattr(wsavs, "maxsim", lambda a, v, backend: arrived.append((a.dtype, v.dtype)) or real(a, v, backend))
    audio = torch.randn(4, 8, requires_grad=True)
    maps = [torch.randn(4, 8, 5, 3, requires_grad=True), torch.randn(4, 8, 3, 2, requires_grad=True)]
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        loss = m2icl_loss(audio, maps, torch.arange(4), 0.1)
    loss.backward()
    assert arrived == [(amp or torch.float32,) * 2] * 2
    assert loss.dtype == audio.grad.dtype == torch.float32 and torch.isfinite(audio.grad).all()
