"""The official AVSBench metrics on hand-worked cases (reference.md section 2), and the audio controls."""
import math

import numpy as np
import pytest
import torch

import eval as evaluation
from data import AVSBench, synthesize
from eval import F_THRESHOLDS, Scores, frame_f_curves, frame_iou, grouped_fscore


def square_gt(size=4, cells=((0, 0), (0, 1), (1, 0), (1, 1))):
    gt = torch.zeros(1, size, size, dtype=torch.bool)
    for r, c in cells:
        gt[0, r, c] = True
    return gt


def test_perfect_prediction():
    gt = square_gt()
    prob = gt.float()
    assert frame_iou(prob, gt).item() == 1.0
    assert frame_f_curves(prob, gt).max().item() == pytest.approx(1.0)


def test_all_wrong_prediction():
    gt = square_gt()                                   # 4 of 16 pixels
    prob = (~gt).float()
    assert frame_iou(prob, gt).item() == 0.0
    curve = frame_f_curves(prob, gt)[0]
    # only threshold 0 predicts everything positive: P = 4/16, R = 1, F = 1.3 P / (0.3 P + R)
    assert curve[0].item() == pytest.approx(1.3 * 0.25 / (0.3 * 0.25 + 1))
    assert curve[1:].abs().max().item() == 0.0


def test_empty_gt_scores_true_negative_ratio_and_is_skipped_by_f():
    gt = torch.zeros(1, 4, 4, dtype=torch.bool)
    prob = square_gt().float()                         # 4 of 16 pixels predicted foreground
    assert frame_iou(prob, gt).item() == pytest.approx(12 / 16)
    curves = frame_f_curves(prob, gt)
    assert torch.isnan(curves).all()
    assert grouped_fscore(curves, ["v"]) == 0.0        # a group without a valid frame contributes 0


def test_iou_partial_overlap():
    gt = square_gt()                                   # rows 0-1, cols 0-1
    prob = square_gt(cells=((0, 0), (0, 1), (0, 2), (0, 3))).float() * 0.7   # row 0
    assert frame_iou(prob, gt).item() == pytest.approx(2 / 6)
    assert frame_iou(prob * 0.5 / 0.7, gt).item() == 0.0        # 0.5 is not > 0.5


def test_grouping_by_video_vs_by_frame():
    curves = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.4], [float("nan"), float("nan")]])
    videos = ["a", "a", "b", "b"]
    # video a: mean curve [0.5, 0.5] -> 0.5; video b: its valid frame -> 0.4
    assert grouped_fscore(curves, videos) == pytest.approx(0.45)
    # per frame: 1, 1, 0.4 and 0 for the empty frame
    assert grouped_fscore(curves, ["1", "2", "3", "4"]) == pytest.approx(2.4 / 4)


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 7, 5), (1, 224, 224)])
def test_f_curves_match_thresholding_255_times(shape):
    g = torch.Generator().manual_seed(sum(shape))
    prob = torch.rand(shape, generator=g)
    prob[0, 0, :3] = torch.tensor([0.0, 1.0, F_THRESHOLDS[100].item()])   # exact threshold values
    gt = torch.rand(shape, generator=g) > 0.6
    fast = frame_f_curves(prob, gt)
    for k in (0, 1, 100, 127, 253, 254):
        t = F_THRESHOLDS[k]
        pred = (prob >= t).double()
        tp = (pred * gt).sum(dim=(1, 2))
        precision = tp / (pred.sum(dim=(1, 2)) + 1e-20)
        recall = tp / (gt.sum(dim=(1, 2)) + 1e-20)
        f = (1.3 * precision * recall / (0.3 * precision + recall)).nan_to_num(0.0)
        torch.testing.assert_close(fast[:, k], f, rtol=1e-12, atol=1e-12)


def test_scores_summary_per_category_and_counts():
    gt = square_gt().repeat(4, 1, 1)
    prob = torch.stack([gt[0].float(), gt[0].float(), (~gt[0]).float(), gt[0].float()])
    scores = Scores()
    scores.add(prob, gt, ["a", "a", "b", "b"], [0, 0, 6, 6], ["k1", "k2", "k3", "k4"])
    result = scores.summary()
    assert result["miou"] == pytest.approx(0.75)
    assert result["frames"] == 4 and result["videos"] == 2 and result["fscore_grouping"] == "video"
    assert result["per_category"]["ambulance_siren"]["miou"] == 1.0
    assert result["per_category"]["dog_barking"]["miou"] == pytest.approx(0.5)
    # video b averages the all-wrong curve (0.30 at t = 0, then 0) with a perfect one (0.30 at t = 0, then 1):
    # max 0.5; video a scores 1
    assert result["fscore"] == result["fscore_by_video"] == pytest.approx((1.0 + 0.5) / 2)
    # by frame: 1, 1, f0, 1, where f0 = 1.3 * 0.25 / (0.3 * 0.25 + 1) is the all-wrong frame's best (t = 0: all 16
    # pixels positive, precision 4/16); by 4 videos: one group, whose mean curve is f0 at t = 0 and 3/4 above
    f0 = 1.3 * 0.25 / (0.3 * 0.25 + 1)
    assert result["fscore_by_frame"] == pytest.approx((3 + f0) / 4)
    assert result["fscore_by_4_videos"] == pytest.approx(0.75)
    assert scores.summary("frame")["fscore"] == result["fscore_by_frame"]


def test_grouping_by_4_videos_follows_split_order():
    """AVSBench's test.sh: batches of 4 videos (20 frames) in the split's order; 5 videos = 2 groups."""
    gt = square_gt().repeat(5, 1, 1)
    prob = torch.stack([gt[0].float()] * 4 + [(~gt[0]).float()])
    scores = Scores()
    scores.add(prob, gt, ["v1", "v2", "v3", "v4", "v5"], [0] * 5, [f"k{i}" for i in range(5)])
    assert scores.groups("4-videos") == [0, 0, 0, 0, 1]
    assert scores.summary()["fscore_by_4_videos"] == pytest.approx((1.0 + 1.3 * 0.25 / (0.3 * 0.25 + 1)) / 2)


def test_foreground_area_and_non_empty_fraction():
    scores = evaluation.Scores()
    prob = torch.zeros(3, 4, 4)
    prob[0, :2] = 0.9                                     # half the frame
    prob[1, 0, 0] = 0.6                                   # one pixel
    gt = torch.ones(3, 4, 4, dtype=torch.bool)
    scores.add(prob, gt, ["a", "a", "b"], [0, 0, 1], ["k1", "k2", "k3"])
    result = scores.summary()
    assert result["fg_area"] == pytest.approx((0.5 + 1 / 16 + 0) / 3)
    assert result["non_empty"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def s4_train(tmp_path_factory):
    root = tmp_path_factory.mktemp("controls")
    synthesize(root, "s4", videos=12, seed=3, size=32)
    return AVSBench(root, "s4", "train", img_size=32)


def test_swapped_audio_comes_from_the_same_second_of_another_category(s4_train):
    control = evaluation.AudioControl(s4_train, "swap")
    categories = {s4_train.items[i].category for i in range(len(s4_train))}
    assert len(categories) > 1
    for index in range(len(s4_train)):
        partner = control.partner[index]
        mine, theirs = s4_train.items[index], s4_train.items[partner]
        assert theirs.category != mine.category and theirs.frame == mine.frame
    for index in (0, 7):
        item = control[index]
        torch.testing.assert_close(item["audio"], s4_train.audio(control.partner[index]))
        torch.testing.assert_close(item["image"], s4_train[index]["image"])


def test_silent_audio_is_the_spectrogram_of_zeros(s4_train):
    audio = evaluation.AudioControl(s4_train, "silent")[3]["audio"]
    assert audio.shape == (1, 257, 300)
    torch.testing.assert_close(audio, torch.full_like(audio, math.log(1e-7)))


def test_pair_confidence_is_the_mean_of_the_top_quarter():
    prob = torch.arange(16.0).view(1, 1, 4, 4) / 15
    assert evaluation.pair_confidence(prob).item() == pytest.approx(13.5 / 15)


def test_offscreen_ap_and_max_f1_hand_worked():
    """4 pairs, by confidence: a sounding pair found (IoU 0.8), a non-sounding one, a sounding one segmented
    wrongly (IoU 0.3), a non-sounding one. Thresholds 0.8, 0.7, 0.6 give (P, R) = (1/2, 1/2), (1/3, 1), (1/4, 1):
    AP = 1/2 * (1 - 1/2) = 1/4. F1 at 0.6 .. 0.9: 0.4, 0.5, 0.5 and, at 0.9, P = 1, R = 1/2: 2/3."""
    result = evaluation.offscreen_metrics([0.9, 0.8, 0.7, 0.6], [0.8, 0.0, 0.3, 0.0], [True, False, True, False])
    assert result["ap"] == pytest.approx(0.25) and result["max_f1"] == pytest.approx(2 / 3)
    assert result["pairs"] == 4 and result["sounding_pairs"] == 2


def test_offscreen_perfect_and_deaf_models():
    """As in SLAVC's code, the AP sum starts at the second-highest confidence: a perfect ranking of 5 sounding
    pairs starts at recall 2/5 and scores 3/5."""
    sounding = np.array([True] * 5 + [False] * 10)
    confidence = np.concatenate([[0.95, 0.9, 0.85, 0.8, 0.75], np.linspace(0.1, 0.5, 10)])
    perfect = evaluation.offscreen_metrics(confidence, np.ones(15), sounding)
    assert perfect["max_f1"] == pytest.approx(1.0) and perfect["ap"] == pytest.approx(0.6)
    wrong_place = evaluation.offscreen_metrics(confidence, np.full(15, 0.4), sounding)   # found, IoU < 0.5
    assert wrong_place["max_f1"] == 0.0 and wrong_place["ap"] == 0.0
    deaf = evaluation.offscreen_metrics(np.full(15, 0.5), np.ones(15), sounding)     # the same for every pair
    assert deaf["max_f1"] == pytest.approx(2 * (1 / 3) / (1 / 3 + 1)) and deaf["ap"] == 0.0
