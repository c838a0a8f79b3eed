"""Sound-source localisation benchmarks (eval.py --benchmark flickr|vggss): EZ-VSL's cIoU / AP50 / AUC on
hand-worked cases, the readers on tiny fixtures written in each published layout, their one-line errors, and
the extended (off-screen) versions."""
import json

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import eval as evaluation
from data import LocalisationSet, box_map
from test_train_eval import error_line

FLICKR_XML = """<?xml version="1.0"?>
<annotation>{}</annotation>"""
BOX = "<object><bbox><label>sound</label><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bbox></object>"


def common(root, ids):
    (root / "frames").mkdir(parents=True)
    (root / "audio").mkdir()
    for n, key in enumerate(ids):
        Image.fromarray(np.full((30, 40, 3), 40 * n, np.uint8)).save(root / "frames" / f"{key}.jpg")
        tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * n) * np.arange(2 * 16000) / 16000)
        soundfile.write(root / "audio" / f"{key}.wav", tone, 16000)


def flickr_root(root, ids=("10001", "10002", "10003")):
    """Each frame annotated by two annotators, in the 256 x 256 frame they saw."""
    common(root, ids)
    (root / "Annotations").mkdir()
    for key in ids:
        (root / "Annotations" / f"{key}.xml").write_text(FLICKR_XML.format(
            BOX.format(0, 0, 128, 128) + BOX.format(64, 0, 192, 128)))
    return root


def vggss_root(root, ids=("a_000010", "b_000020", "c_000030")):
    """VGG-SS's box JSON holds one more entry than there are downloaded frames."""
    common(root, ids)
    entries = [{"file": key, "bbox": [[0.0, 0.0, 0.5, 0.5]]} for key in (*ids, "gone_000040")]
    (root / "vggss.json").write_text(json.dumps(entries))
    return root


def test_ciou_hand_worked():
    """gt 1, 1, 0.5 (one annotator), 0; predicted: pixels 1, 3, 4. Inside: 1 + 0.5; gt 2.5; outside: 1."""
    gt = torch.tensor([[1.0, 1.0, 0.5, 0.0]])
    prob = torch.tensor([[0.9, 0.1, 0.8, 0.7]])
    assert evaluation.ciou(prob, gt, 0.5) == pytest.approx(1.5 / 3.5)
    assert evaluation.top_half_threshold(torch.arange(16.0).view(4, 4)) == 8.0


def test_localisation_metrics_hand_worked():
    """cIoU 0.32, 0.62, 0.97: AP50 2/3; the share >= t is 1 up to t = 0.30, 2/3 to 0.60, 1/3 to 0.95 and 0 at
    1: trapezoids of width 0.05 sum to 12.8333 x 0.05."""
    result = evaluation.localisation_metrics([0.32, 0.62, 0.97])
    assert result["ap50"] == pytest.approx(2 / 3) and result["mean_ciou"] == pytest.approx(1.91 / 3)
    assert result["auc"] == pytest.approx((6 + 5 / 6 + 10 / 3 + 1 / 2 + 2 + 1 / 6) * 0.05)


def test_box_maps_as_ezvsl_builds_them():
    boxes = np.array([[0, 0, 112, 112], [56, 0, 168, 112]])
    flickr, vggss = box_map(boxes, consensus=True), box_map(boxes, consensus=False)
    assert flickr[0, 0] == 0.5 and flickr[0, 60] == 1.0 and flickr[0, 150] == 0.5 and flickr[120, 60] == 0
    assert vggss[0, 0] == vggss[0, 60] == vggss[0, 150] == 1.0 and vggss.sum() == 112 * 168


def test_readers_in_the_published_layouts(tmp_path):
    flickr = LocalisationSet(flickr_root(tmp_path / "flickr"), "flickr", img_size=64)
    item = flickr[0]
    assert item["image"].shape == (3, 64, 64) and item["audio"].shape == (1, 257, 300)
    assert item["gt_map"].shape == (224, 224) and item["gt_map"][0, 60] == 1.0 and item["gt_map"][0, 10] == 0.5
    vggss = LocalisationSet(vggss_root(tmp_path / "vggss"), "vggss")
    assert len(vggss) == 3 and vggss.annotated == 4 and vggss[1]["gt_map"].sum() == 112 * 112


@pytest.mark.parametrize("kind", ["flickr", "vggss"])
def test_benchmark_and_its_extended_version(tmp_path, random_checkpoint, kind):
    root = (flickr_root if kind == "flickr" else vggss_root)(tmp_path / kind)
    result = evaluation.main([str(random_checkpoint), "--benchmark", kind, "--root", str(root), "--offscreen",
                              "--out", str(tmp_path / "out"), "--device", "cpu", "--workers", "0"])
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["images"] == 3 and len(written["per_image_ciou"]) == 3 and written["benchmark"] == kind
    assert 0 <= result["ap50"] <= 1 and 0 <= result["auc"] <= 1
    assert (result["offscreen"]["pairs"], result["offscreen"]["sounding_pairs"]) == (9, 3)


@pytest.mark.parametrize("damage,expected", [
    ("missing box file", "missing box file"),
    ("malformed XML", "malformed XML"),
    ("box outside", "is not inside the 256 x 256 frame"),
    ("missing sound", "missing file (the sound of 10002.jpg)"),
    ("malformed JSON", "malformed JSON"),
    ("JSON box outside", "a box is not inside the frame"),
    ("no JSON entry", "no boxes for b_000020.jpg"),
])
def test_bad_benchmark_data_stops_with_one_line(tmp_path, random_checkpoint, damage, expected):
    vggss = "JSON" in damage
    root = vggss_root(tmp_path / "set") if vggss else flickr_root(tmp_path / "set")
    if damage == "missing box file":
        path = root / "Annotations" / "10002.xml"
        path.unlink()
    elif damage == "malformed XML":
        path = root / "Annotations" / "10002.xml"
        path.write_text("<annotation><object><bbox>")
    elif damage == "box outside":
        path = root / "Annotations" / "10002.xml"
        path.write_text(FLICKR_XML.format(BOX.format(100, 0, 300, 128)))
    elif damage == "missing sound":
        path = root / "audio" / "10002.wav"
        path.unlink()
    else:
        path = root / "vggss.json"
        entries = json.loads(path.read_text())
        if damage == "malformed JSON":
            path.write_text("[{\"file\": ")
        elif damage == "JSON box outside":
            entries[1]["bbox"] = [[0.5, 0.5, 1.2, 0.9]]
            path.write_text(json.dumps(entries))
        else:
            path.write_text(json.dumps([e for e in entries if e["file"] != "b_000020"]))
    flags = [str(random_checkpoint), "--benchmark", "vggss" if vggss else "flickr", "--root", str(root), "--out",
             str(tmp_path / "out")]
    line = error_line(evaluation.main, "eval.py", flags, as_process=damage == "missing box file")
    assert line.startswith(f"error: {path}: ") and expected in line, line
