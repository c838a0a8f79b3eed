"""AVSBench-semantic: the synthetic set in the official layout, the reader (video-level labels from the metadata,
colour masks through the palette), its one-line errors, and the semantic metrics on hand-worked cases."""
import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import eval as evaluation
import train
import wsavs
from data import AVSS, AVSS_DIR, DataError, collate, load_class_mask, synthesize_avss, voc_palette
from test_train_eval import TINY, error_line, run_script
from wsavs import preset_config


@pytest.fixture(scope="module")
def avss_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("avss")
    synthesize_avss(root, videos=12, seed=0, size=48)
    return root


def tree_digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_palette_is_vocs():
    assert voc_palette(6).tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
    assert voc_palette(256)[255].tolist() == [224, 224, 192]


def test_synthetic_avss_layout_and_determinism(avss_root, tmp_path):
    root = avss_root / AVSS_DIR
    names = json.loads((root / "label2idx.json").read_text())
    assert names["background"] == 1 and names["ambulance-siren"] == 2 and len(names) == 7
    header, *rows = [line.split(",") for line in (root / "metadata.csv").read_text().splitlines()]
    assert header == ["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"] and len(rows) == 12
    for vid, uid, _, _, a_obj, split, label in rows:
        folder = root / label / uid
        frames = sorted(p.name for p in (folder / "frames").iterdir())
        assert len(frames) == (10 if label == "v2" else 5)
        labelled = sorted(p.name for p in (folder / "labels_rgb").iterdir())
        assert labelled == (["0.png"] if (label, split) == ("v1s", "train") else sorted(frames_png(len(frames))))
        sounding = {names[n] - 1 for n in a_obj.split("_")}
        for name in labelled:
            classes = set(np.unique(np.asarray(Image.open(folder / "labels_semantic" / name))).tolist()) - {0}
            assert classes <= sounding                    # masks hold the sounding objects only
    sizes = {Image.open(root / label / uid / "frames" / "0.jpg").size for _, uid, _, _, _, _, label in rows}
    assert len(sizes) > 1                                 # frames differ in size between videos
    synthesize_avss(tmp_path, videos=12, seed=0, size=48)
    assert tree_digest(tmp_path / AVSS_DIR) == tree_digest(root)


def frames_png(count):
    return [f"{i}.png" for i in range(count)]


def test_reader_labels_masks_and_batches(avss_root):
    test = AVSS(avss_root, "test", img_size=32)
    assert len(test.videos) == 3 and len(test) == sum(10 if v.startswith("v2") else 5 for v in test.videos)
    item = test[0]
    assert item["image"].shape == (3, 32, 32) and item["audio"].shape == (1, 257, 300)
    semantic = np.asarray(Image.open(test.items[0].mask_path.parent.parent / "labels_semantic" / "0.png"))
    assert torch.equal(item["class_mask"][0], torch.from_numpy(semantic.astype(np.int64)))
    assert torch.equal(item["mask"][0], torch.from_numpy((semantic > 0).astype(np.float32)))
    assert item["labels"].nonzero().flatten().tolist() == list(test.items[0].classes)
    batch = collate([test[i] for i in range(len(test))])           # frames of several sizes
    assert batch["image"].shape[0] == len(test) and len({m.shape for m in batch["class_mask"]}) > 1
    train = AVSS(avss_root, "train", avss_set="v1s")
    assert all(item.mask_path is None for item in train.items if item.frame > 0)
    with pytest.raises(DataError, match="no v2 videos in split"):
        AVSS(avss_root, "nosuch", avss_set="v2")


@pytest.mark.parametrize("damage,expected", [
    ("missing label frame", "missing file (avss test needs it)"),
    ("unknown colour", "unknown colour (1, 2, 3) at x=0, y=0"),
    ("no split column", "no split column"),
    ("unknown class", "'unicorn', not in label2idx.json"),
    ("semantic disagrees", "disagrees with 0.png on 1 pixels"),
])
def test_bad_avss_data_stops_with_one_line(avss_root, tmp_path, damage, expected):
    copy = tmp_path / "copy"
    shutil.copytree(avss_root, copy)
    root = copy / AVSS_DIR
    test = AVSS(copy, "test")
    label_frame = test.items[0].mask_path
    if damage == "missing label frame":
        path = label_frame
        path.unlink()
    elif damage == "unknown colour":
        path = label_frame
        image = np.asarray(Image.open(path)).copy()
        image[0, 0] = (1, 2, 3)
        Image.fromarray(image).save(path)
    elif damage == "semantic disagrees":
        path = label_frame.parent.parent / "labels_semantic" / "0.png"
        image = np.asarray(Image.open(path)).copy()
        image[0, 0] = 5 if image[0, 0] != 5 else 4
        Image.fromarray(image).save(path)
    else:
        path = root / "metadata.csv"
        lines = path.read_text().splitlines()
        if damage == "no split column":
            path.write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != 5) for line in lines))
        else:
            cells = lines[1].split(",")
            cells[4] = cells[4] + "_unicorn"
            path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    flags = ["--pred-dir", str(pred_dir), "--root", str(copy), "--subset", "avss"]
    line = error_line(evaluation.main, "eval.py", flags, as_process=damage == "unknown colour")
    assert line.startswith(f"error: {path}") and expected in line, line


def test_semantic_metrics_hand_worked():
    """Frame 1 (gt | pred): class 0 IoU 1/1, class 1 1/2, class 2 1/2. Frame 2: gt all class 1, pred half class 0:
    class 1 2/4, class 0 0/2. Per class over the frames where it is in the union: 0: (1 + 0) / 2, 1: (1/2 + 1/2)
    / 2, 2: 1/2. Pooled: 0: 1/3, 1: 3/6, 2: 1/2. With K = 4, class 3 is never seen."""
    gt = torch.tensor([[[0, 1], [1, 2]], [[1, 1], [1, 1]]])
    pred = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [1, 1]]])
    scores = evaluation.SemanticScores(4)
    scores.add(pred, gt)
    result = scores.summary()
    assert result["miou"] == pytest.approx(1.5 / 4) and result["miou_present"] == pytest.approx(0.5)
    assert result["miou_pooled"] == pytest.approx((1 / 3 + 0.5 + 0.5) / 3)
    assert result["classes_seen"] == 3 and result["per_class_iou"][3] == 0.0
    # F at the argmax: class 0 frame 1: 1, frame 2: P 0/2 -> 0; class 1 frame 1: P 1, R 1/2 -> 1.3 / 1.6;
    # frame 2: P 1, R 1/2; class 2: P 1/2, R 1 -> 0.65 / 1.15
    f1 = 1.3 * 0.5 / (0.3 + 0.5)
    assert result["fscore"] == pytest.approx((0.5 + f1 + 0.65 / 1.15) / 4)


@pytest.mark.parametrize("kind", ["index", "colour"])
def test_pred_dir_of_perfect_predictions(avss_root, tmp_path, kind):
    test = AVSS(avss_root, "test")
    for item in test.items:
        if item.mask_path is not None:
            target = tmp_path / "preds" / f"{item.key}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            source = item.mask_path if kind == "colour" else item.mask_path.parent.parent / "labels_semantic" / \
                item.mask_path.name
            target.write_bytes(source.read_bytes())
    result = evaluation.main(["--pred-dir", str(tmp_path / "preds"), "--root", str(avss_root), "--subset", "avss",
                              "--out", str(tmp_path / "out")])
    assert result["miou_present"] == pytest.approx(1.0) and result["fscore_present"] == pytest.approx(1.0)
    assert result["miou"] == pytest.approx(result["classes_seen"] / 7)      # the official mean: unseen count 0


@pytest.mark.parametrize("width,height", [(63, 47), (224, 224), (300, 180), (17, 250)])
def test_official_size_resizes_as_the_official_loader(tmp_path, width, height):
    """Class maps resized as AVSS's loader resizes the colour PNG (PIL NEAREST to 224 x 224) and decodes it."""
    palette = voc_palette(7)
    classes = torch.randint(0, 7, (height, width), generator=torch.Generator().manual_seed(width))
    png = tmp_path / "mask.png"
    Image.fromarray(palette[classes.numpy()].astype(np.uint8)).save(png)
    resized = tmp_path / "resized.png"
    Image.open(png).convert("RGB").resize((224, 224), Image.NEAREST).save(resized)
    codes = voc_palette(7).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    expected = load_class_mask(resized, (224, 224), codes)[0]
    assert torch.equal(evaluation.at_official_size(classes), expected)


def test_semantic_pseudo_labels_take_the_videos_classes_inside_the_mask():
    """Pseudo mask on columns 0-3 of a 1 x 6 frame; class 1's CAM is high left, class 2's right, class 3's
    highest everywhere but it is not among the video's labels."""
    pseudo = torch.tensor([[[[1.0, 1, 1, 1, 0, 0]]]])
    cams = torch.stack([torch.tensor([5.0, 5, 0, 0, 0, 0]), torch.tensor([0.0, 0, 5, 5, 5, 5]),
                        torch.full((6,), 9.0)])[None, :, None, :]                      # (1, 3, 1, 6)
    labels = torch.tensor([[0.0, 1, 1, 0]])
    assert wsavs.semantic_pseudo_labels(pseudo, cams, labels).tolist() == [[[1, 1, 2, 2, 0, 0]]]


def class_m2icl_by_hand(class_audio, visual_maps, labels, tau):
    """The definition, one anchor at a time: -log(sum over positives of exp(sim / tau) / sum over all)."""
    b, c, _ = class_audio.shape
    queries = [(i, k) for i in range(b) for k in range(c)]
    total = 0.0
    for visual in visual_maps:
        def sim(i, k, m):
            return (F.normalize(class_audio[i, k], dim=0) @ F.normalize(visual[m].flatten(1), dim=0)).max() / tau
        heard = [(i, k) for i, k in queries if labels[i, k]]
        for i, k in heard:                                   # a sound's class evidence -> the frames of that class
            logits = torch.stack([sim(i, k, m) for m in range(b)])
            positive = torch.tensor([bool(labels[m, k]) for m in range(b)])
            total += (logits.logsumexp(0) - logits[positive].logsumexp(0)) / len(heard)
        for m in range(b):                                   # a frame -> the class evidence of sounds that hold it
            logits = torch.stack([sim(i, k, m) for i, k in queries])
            positive = torch.tensor([bool(labels[i, k] and labels[m, k]) for i, k in queries])
            total += (logits.logsumexp(0) - logits[positive].logsumexp(0)) / b
    return total


@pytest.mark.parametrize("b,c,d,sizes", [(3, 2, 4, [(1, 1)]), (4, 3, 5, [(3, 2), (1, 1)]), (2, 5, 3, [(2, 3)])])
def test_class_m2icl_equals_its_definition(b, c, d, sizes):
    g = torch.Generator().manual_seed(b * 10 + c)
    class_audio = torch.randn(b, c, d, generator=g)
    visual_maps = [torch.randn(b, d, *size, generator=g) for size in sizes]
    labels = torch.zeros(b, c)
    labels[torch.arange(b), torch.arange(b) % c] = 1                  # every video one class, some a second
    labels[0, (1 % c)] = 1
    got = wsavs.class_m2icl_loss(class_audio, visual_maps, labels, 0.1)
    torch.testing.assert_close(got, class_m2icl_by_hand(class_audio, visual_maps, labels, 0.1), rtol=1e-5, atol=1e-5)


def test_class_evidence_adds_the_class_sound_maps():
    """Class 1's and 2's CAMs tie on a 1 x 4 frame; the sound's evidence for class 2 points right: with the sound
    maps the right half goes to class 2, without them argmax keeps class 1 everywhere."""
    out = {"class_maps": torch.tensor([[1.0, 1, 1, 0], [1.0, 1, 1, 0]])[None, :, None, :],     # (1, 2, 1, 4)
           "class_audio": torch.tensor([[[1.0, 0], [0, 1]]]),                                     # (1, 2, D=2)
           "visual_maps": [torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]])[None, :, None, :]]}      # (1, 2, 1, 4)
    torch.testing.assert_close(wsavs.class_evidence(out, "cam"), torch.tensor([[[[1.0, 1, 1, 0]]] * 2]))
    pseudo, labels = torch.ones(1, 1, 1, 4), torch.tensor([[0.0, 1, 1]])
    for kind, expected in (("cam", [[[1, 1, 1, 1]]]), ("cam+sound", [[[1, 1, 2, 2]]])):
        assert wsavs.semantic_pseudo_labels(pseudo, wsavs.class_evidence(out, kind), labels).tolist() == expected


def test_wsavss_trains_and_predicts_three_class_maps():
    cfg = preset_config("small", dim=16, decoder_dim=8, img_size=64)
    torch.manual_seed(0)
    model = wsavs.WSAVSS(cfg, num_classes=5)
    image, audio = torch.randn(4, 3, 64, 64), torch.randn(4, 1, 257, 300)
    out = model(image, audio)
    assert out["mask_logits"].shape == (4, 5, 64, 64) and out["audio_logits"].shape == (4, 4)
    labels = torch.tensor([[0.0, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]])
    pseudo = torch.zeros(4, 1, 64, 64)
    pseudo[:, :, 16:48, 16:48] = 1
    loss, parts = wsavs.wsavss_loss(out, pseudo, labels, torch.arange(4), cfg)
    loss.backward()
    assert set(parts) == {"visual_cls", "audio_cls", "avf", "class_avf", "seg"} and torch.isfinite(loss)
    assert model.class_head.weight.grad.abs().sum() > 0 and model.audio_class_head.weight.grad.abs().sum() > 0
    assert model.class_gates.grad.abs().sum() > 0
    look_only = dataclasses.replace(cfg, class_avf_weight=0.0)
    assert set(wsavs.wsavss_loss(model(image, audio), pseudo, labels, torch.arange(4), look_only)[1]) == \
        {"visual_cls", "audio_cls", "avf", "seg"}
    predictions = model.eval().predict_classes(image, audio)
    assert set(predictions) == {"wsavss", "decoder", "top_class", "cam"}
    assert all(p.shape == (4, 64, 64) and p.dtype == torch.int64 and 0 <= p.min() and p.max() < 5
               for p in predictions.values())
    assert model.predict(image, audio).shape == (4, 1, 64, 64)
    heard = wsavs.detected(torch.sigmoid(model(image, audio)["audio_logits"]))          # listening picks the classes
    for frame, allowed in zip(predictions["wsavss"], heard):
        assert set(frame.unique().tolist()) <= {0, *(allowed.nonzero().flatten() + 1).tolist()}


def test_train_and_eval_wsavss_on_avss(avss_root, tmp_path):
    out = tmp_path / "run"
    train.main(["--root", str(avss_root), "--subset", "avss", "--method", "wsavss", "--out", str(out), *TINY,
                "--preset", "small", "--batch-size", "4"])
    ckpt = evaluation.load_checkpoint(out / "best.pt")
    assert ckpt["classes"][0] == "background" and len(ckpt["classes"]) == 7
    metrics = json.loads((out / "eval-best-test" / "metrics.json").read_text())
    assert set(metrics["semantic"]) == {"wsavss", "decoder", "top_class", "cam"} and 0 <= metrics["miou"] <= 1
    test = AVSS(avss_root, "test")
    official = metrics["semantic"]["wsavss"]["official_loader"]     # 5 padding frames for each 5-frame clip
    assert official["padding_frames"] == 5 * sum(not v.startswith("v2/") for v in test.videos) > 0
    assert 0 <= official["miou"] <= 1 and official["miou"] != metrics["semantic"]["wsavss"]["miou"]
    assert (out / "eval-best-test" / "semantic.png").is_file()
    again = evaluation.main([str(out / "best.pt"), "--out", str(tmp_path / "ev"), "--workers", "0", "--overlays", "1",
                             "--worst", "0"])
    assert again["semantic"]["wsavss"]["miou"] == pytest.approx(metrics["semantic"]["wsavss"]["miou"])
    result = run_script("train.py", "--root", str(avss_root), "--subset", "avss", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--subset avss trains --method wsavss" in result.stderr
