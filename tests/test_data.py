"""Tests for data.py on real generated data: the AVSBench layout, items, audio features, bad data, the generator."""
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import data

VIDEOS = 5        # -> 3 train / 1 val / 1 test
CATEGORIES = 4
SR = data.SAMPLE_RATE
BIN_HZ = SR / data.N_FFT  # 31.25 Hz per spectrogram bin
SUBSETS = ["s4", "ms3"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """An AVSBench root holding both synthetic subsets."""
    out = tmp_path_factory.mktemp("avsbench")
    for subset in SUBSETS:
        data.synthesize(out, subset, videos=VIDEOS, seed=0, categories=CATEGORIES)
    return out


@pytest.fixture
def broken_root(root, tmp_path):
    """A private copy of the synthetic root, to damage."""
    copy = tmp_path / "AVSBench"
    shutil.copytree(root, copy)
    return copy


def meta_rows(root, subset):
    path = Path(root) / data.SUBSET_DIRS[subset] / data.META_CSVS[subset]
    with open(path, newline="") as file:
        return list(csv.reader(file))


def write_meta_rows(root, subset, rows):
    path = Path(root) / data.SUBSET_DIRS[subset] / data.META_CSVS[subset]
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return path


def tone(frequency, seconds, rate, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


# -----------------------------------------------------------------------------
# layout and items

def test_layout_is_avsbench(root):
    s4_name, _, s4_category, s4_split = meta_rows(root, "s4")[1]
    s4 = root / "Single-source" / "s4_data"
    assert (s4 / "visual_frames" / s4_split / s4_category / s4_name / f"{s4_name}_5.png").is_file()
    assert (s4 / "audio_wav" / s4_split / s4_category / f"{s4_name}.wav").is_file()
    assert meta_rows(root, "s4")[0] == ["name", "start_time", "category", "split"]
    ms3_id, ms3_split = meta_rows(root, "ms3")[1]
    ms3 = root / "Multi-sources" / "ms3_data"
    assert (ms3 / "visual_frames" / ms3_id / f"{ms3_id}.mp4_3.png").is_file()
    assert (ms3 / "audio_wav" / ms3_split / f"{ms3_id}.wav").is_file()
    assert (ms3 / "gt_masks" / ms3_split / ms3_id / f"{ms3_id}_5.png").is_file()
    assert Image.open(ms3 / "gt_masks" / ms3_split / ms3_id / f"{ms3_id}_1.png").mode == "P"
    assert meta_rows(root, "ms3")[0] == ["video_id", "split"]
    # S4 train has only the first GT mask
    train_name, _, train_category, _ = next(row for row in meta_rows(root, "s4")[1:] if row[3] == "train")
    train_masks = s4 / "gt_masks" / "train" / train_category / train_name
    assert sorted(path.name for path in train_masks.iterdir()) == [f"{train_name}_1.png"]
    assert len(train_name) == 18 and train_name[11] == "_" and train_name[12:].isdigit()


@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize("split", data.SPLITS)
def test_items(root, subset, split):
    dataset = data.AVSBench(root, subset, split)
    rows = [row for row in meta_rows(root, subset)[1:] if row[-1] == split]
    assert dataset.videos == [row[0] for row in rows]
    assert len(dataset) == 5 * len(rows) == len(dataset.keys)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.float32
        assert item["audio"].shape == (1, 257, 300) and item["audio"].dtype == torch.float32
        assert torch.isfinite(item["audio"]).all()
        assert item["mask"].shape == (1, 224, 224) and item["mask"].dtype == torch.float32
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert item["frame"] == index % 5 + 1 and item["video"] == dataset.videos[index // 5]
        assert item["key"] == dataset.keys[index]
        expected_has_mask = not (subset == "s4" and split == "train" and item["frame"] > 1)
        assert item["has_mask"] == expected_has_mask
        assert (item["mask"].sum() > 0) == expected_has_mask  # sounding objects are always visible
        assert (dataset.items[index].mask_path is not None) == expected_has_mask
        assert dataset.items[index].image_path.is_file()
        if subset == "s4":
            category_name = rows[index // 5][2]
            assert item["category"] == data.S4_CATEGORIES.index(category_name) < CATEGORIES
            assert dataset.items[index].category_name == category_name
            assert item["key"] == f"{split}/{category_name}/{item['video']}/{item['video']}_{item['frame']}"
        else:
            assert item["category"] == -1 and dataset.items[index].category_name is None
            assert item["key"] == f"{split}/{item['video']}/{item['video']}_{item['frame']}"
    # ImageNet normalisation: a frame's mean pixel is near 0, not near 0.5
    assert abs(dataset[0]["image"].mean().item()) < 1.5
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=5)))
    assert batch["image"].shape == (5, 3, 224, 224) and batch["audio"].shape == (5, 1, 257, 300)


@pytest.mark.parametrize("subset", SUBSETS)
def test_item_accessors_and_gt_items(root, subset):
    for split in ("train", "val"):
        dataset = data.AVSBench(root, subset, split)
        for video in dataset.videos:
            indices = dataset.indices_of(video)
            assert [dataset.items[index].frame for index in indices] == [1, 2, 3, 4, 5]
            for index in indices:
                item, labels = dataset[index], dataset.gt_item(index)
                assert labels.keys() == {"mask", "has_mask", "video", "frame", "category", "key"}
                assert torch.equal(labels["mask"], item["mask"])
                assert all(labels[name] == item[name] for name in ("has_mask", "video", "frame", "category", "key"))
                assert dataset.has_gt(index) == item["has_mask"] == (dataset.mask_path(index) is not None)
                assert dataset.image_path(index) == dataset.items[index].image_path
                if dataset.has_gt(index):
                    assert dataset.mask_path(index).relative_to(dataset.root).as_posix() == \
                        f"{subset}_data/gt_masks/{item['key']}.png"
                expected_name = data.S4_CATEGORIES[item["category"]] if subset == "s4" else None
                assert dataset.category_name(index) == expected_name


@pytest.mark.parametrize("subset", SUBSETS)
def test_root_may_be_avsbench_or_subset_folder(root, subset):
    from_avsbench = data.AVSBench(root, subset, "val")
    from_subset = data.AVSBench(root / data.SUBSET_DIRS[subset], subset, "val")
    assert from_avsbench.keys == from_subset.keys
    assert data.subset_root(root, subset) == data.subset_root(root / data.SUBSET_DIRS[subset], subset)
    assert torch.equal(from_avsbench[3]["image"], from_subset[3]["image"])


@pytest.mark.parametrize("subset", SUBSETS)
def test_flip_augmentation_moves_image_and_pseudo_mask_together(root, tmp_path, subset):
    plain = data.AVSBench(root, subset, "train")
    for key in plain.keys:  # pseudo masks at half resolution: left 40% foreground (0.6), the rest 0.4
        probabilities = np.full((112, 112), 0.4)
        probabilities[:, :45] = 0.6
        data.write_mask_png(tmp_path / "pseudo" / f"{key}.png", probabilities)
    augmented = data.AVSBench(root, subset, "train", augment="flip", pseudo_mask_dir=tmp_path / "pseudo")
    reference = plain[0]
    pseudo = data.AVSBench(root, subset, "train", pseudo_mask_dir=tmp_path / "pseudo")[0]["pseudo_mask"]
    assert pseudo.shape == (1, 224, 224) and pseudo.dtype == torch.float32
    assert pseudo[0, :, :90].eq(1).all() and pseudo[0, :, 90:].eq(0).all()  # >127 = foreground, nearest resize
    orientations = []
    for epoch in range(16):                               # the flip is drawn from (seed, epoch, index) alone
        item = augmented[0, 0, epoch]
        assert torch.equal(augmented[0, 0, epoch]["image"], item["image"])
        assert "mask" not in item                         # training frames carry no GT
        flipped = not torch.equal(item["image"], reference["image"])
        orientations.append(flipped)
        expected = (lambda x: x.flip(-1)) if flipped else (lambda x: x)
        assert torch.equal(item["image"], expected(reference["image"]))
        assert torch.equal(item["pseudo_mask"], expected(pseudo))
        assert torch.equal(item["audio"], reference["audio"])
    assert 3 <= sum(orientations) <= 13  # p = 0.5


@pytest.mark.parametrize("img_size", [64, 97])
def test_crop_flip_augmentation_crops_frame_and_pseudo_mask_alike(root, tmp_path, img_size):
    """crop-flip: resize to 1.1 x S, a random S crop, a flip; the pseudo mask gets the same crop and flip.
    A pseudo mask made from the frame's own pixels (bright = foreground) must stay the frame's mask."""
    plain = data.AVSBench(root, "s4", "train", img_size=img_size)
    for index, key in enumerate(plain.keys):
        grey = np.asarray(data.read_png(plain.image_path(index)).convert("L"))
        data.write_mask_png(tmp_path / "pseudo" / f"{key}.png", (np.arange(grey.shape[1]) < 100)[None].repeat(
            grey.shape[0], 0).astype(np.float32))          # left 100 of 224 columns
    augmented = data.AVSBench(root, "s4", "train", img_size=img_size, augment="crop-flip",
                              pseudo_mask_dir=tmp_path / "pseudo")
    resized = round(1.1 * img_size)
    lefts = set()
    for epoch in range(12):
        aug = data.draw_augmentation("crop-flip", img_size, [3, epoch, 0])
        item = augmented[0, 3, epoch]
        assert item["image"].shape == (3, img_size, img_size) and item["pseudo_mask"].shape == (1, img_size, img_size)
        assert aug.resized == resized and 0 <= aug.left <= resized - img_size and 0 <= aug.top <= resized - img_size
        lefts.add(aug.left)
        # the mask's edge sits at column 100/224 of the resized frame, then moves with the crop and the flip
        edge = round(100 / 224 * resized) - aug.left
        columns = item["pseudo_mask"][0].mean(dim=0)                     # (S,) fraction foreground per column
        if aug.flip:
            columns = columns.flip(0)
        assert columns[:max(0, edge - 1)].eq(1).all() and columns[edge + 1:].eq(0).all()
        frame = data.read_png(plain.image_path(0)).convert("RGB").resize((resized, resized), Image.BILINEAR)
        expected = frame.crop((aug.left, aug.top, aug.left + img_size, aug.top + img_size))
        if aug.flip:
            expected = expected.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = (np.asarray(expected, dtype=np.float32) / 255 - data.IMAGENET_MEAN) / data.IMAGENET_STD
        torch.testing.assert_close(item["image"], torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
    assert len(lefts) > 1


@pytest.mark.parametrize("subset", SUBSETS)
def test_synthetic_silent_objects_of_equal_size(tmp_path, subset):
    """--silent-objects N --equal-size: every frame holds N silent objects beside the sounding one(s), all drawn
    at one size, so that neither the count nor the size says which object sounds."""
    rng = np.random.default_rng(0)
    for _ in range(6):
        categories, sounding, frames, masks, _ = data.synth_video(rng, subset, 6, 96, silent_objects=2,
                                                                 equal_size=True)
        assert len(categories) - len(sounding) == 2 and (len(sounding) == 1 if subset == "s4" else
                                                          1 <= len(sounding) <= 3)
    layout = data.place_objects(np.random.default_rng(1), 3, 96, equal_size=True)
    assert len({radius for radius, _, _ in layout}) == 1
    assert len({radius for radius, _, _ in data.place_objects(np.random.default_rng(1), 3, 96)}) == 3
    data.synthesize(tmp_path, subset, videos=4, seed=0, size=64, silent_objects=2, equal_size=True)
    marker = (tmp_path / data.SUBSET_DIRS[subset] / data.SYNTH_MARKER).read_text()
    assert marker == data.synthetic_stamp(subset, 4, 0, size=64, silent_objects=2, equal_size=True)
    assert "silent_objects=2 equal_size" in marker
    with pytest.raises(ValueError, match="silent objects"):
        data.synthesize(tmp_path / "x", subset, videos=4, seed=0, size=64, silent_objects=6)


def test_missing_pseudo_mask_names_the_path(root, tmp_path):
    keys = data.AVSBench(root, "s4", "val").keys
    for key in keys[:-1]:
        data.write_mask_png(tmp_path / f"{key}.png", np.ones((224, 224)))
    with pytest.raises(data.DataError, match=keys[-1]):
        data.AVSBench(root, "s4", "val", pseudo_mask_dir=tmp_path)


def test_write_mask_png_round_trip(tmp_path):
    probabilities = torch.linspace(0, 1, 64 * 48).reshape(64, 48)
    path = tmp_path / "a" / "b" / "mask.png"
    data.write_mask_png(path, probabilities)
    image = Image.open(path)
    assert image.mode == "L" and image.size == (48, 64)
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.abs(pixels / 255.0 - probabilities.numpy()).max() <= 0.5 / 255 + 1e-6


# -----------------------------------------------------------------------------
# the synthetic data is a real audio-visual segmentation task

def test_synth_is_deterministic(tmp_path):
    def files(out):
        return {path.relative_to(out): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}

    for name, seed in (("first", 3), ("second", 3), ("other", 4)):
        data.synthesize(tmp_path / name, "ms3", videos=3, seed=seed, size=64)
    first, second, other = (files(tmp_path / name) for name in ("first", "second", "other"))
    assert len(first) == 3 * (5 + 5 + 1) + 2  # frames, masks, wav per video + csv + marker
    assert first == second
    assert first.keys() != other.keys()
    data.synthesize(tmp_path / "first", "ms3", videos=3, seed=4, size=64)  # replaces an earlier synthetic subset
    assert files(tmp_path / "first") == other
    (tmp_path / "real" / "Multi-sources").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        data.synthesize(tmp_path / "real", "ms3", videos=3, seed=0)


def test_synth_command_line(tmp_path, capsys):
    data.main(["synth", "--out", str(tmp_path), "--subset", "s4", "--videos", "3", "--seed", "1",
               "--categories", "3", "--size", "96"])
    assert "train/val/test 1/1/1" in capsys.readouterr().out
    item = data.AVSBench(tmp_path, "s4", "test", img_size=96)[0]
    assert item["image"].shape == (3, 96, 96) and item["mask"].shape == (1, 96, 96)


@pytest.mark.parametrize("subset", SUBSETS)
def test_mask_is_only_the_sounding_objects(root, subset):
    """Objects are saturated, the background is not: the GT covers object pixels, but never all of them."""
    mask_ratios = []
    for split in data.SPLITS:
        dataset = data.AVSBench(root, subset, split)
        for item in dataset.items:
            if item.mask_path is None:
                continue
            rgb = np.asarray(Image.open(item.image_path).convert("RGB"), dtype=np.float32)
            saturation = (rgb.max(-1) - rgb.min(-1)) / (rgb.max(-1) + 1e-6)
            objects = saturation > 0.5
            mask = data.load_mask(item.mask_path, (224, 224))[0].numpy() > 0
            assert (objects & mask).sum() >= 0.95 * mask.sum()
            assert mask.sum() < objects.sum() - 500  # at least one silent object (>= ~1000 pixels) is visible
            mask_ratios.append(mask.sum() / objects.sum())
    assert 0.15 < np.mean(mask_ratios) < 0.8


def test_s4_sound_identifies_the_category(root):
    """The time-averaged spectrum of each S4 video peaks at its category's fundamental."""
    for split in data.SPLITS:
        dataset = data.AVSBench(root, "s4", split)
        for index in range(0, len(dataset), 5):
            item = dataset[index]
            spectrum = item["audio"][0].exp().mean(dim=1)  # (257,)
            expected_bin = data.category_f0(item["category"], CATEGORIES) / BIN_HZ
            assert abs(spectrum.argmax().item() - expected_bin) <= 1


def test_category_sounds_and_looks_differ():
    num_categories = 6
    f0s = [data.category_f0(k, num_categories) for k in range(num_categories)]
    assert f0s[0] == pytest.approx(150) and f0s[-1] == pytest.approx(3000)
    assert min(np.diff(np.log(f0s))) > 0.5  # >= 0.5 octaves apart
    looks = [data.category_look(k, num_categories) for k in range(num_categories)]
    assert len({shape for shape, _, _ in looks}) == num_categories
    assert len({data.category_am_rate(k) for k in range(num_categories)}) == num_categories


# -----------------------------------------------------------------------------
# audio

@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_any_rate_and_channel_count(rate, channels):
    wave = tone(1000.0, 5.0, rate)
    if channels == 2:
        wave = np.stack([wave, wave], axis=1)  # (T, 2)
    spectrogram = data.log_spectrogram(wave, rate, centre_s=2.5)
    assert spectrogram.shape == (1, 257, 300) and spectrogram.dtype == torch.float32
    assert torch.isfinite(spectrogram).all()
    mean_spectrum = spectrogram[0].exp().mean(dim=1)  # (257,)
    assert mean_spectrum.argmax().item() == round(1000.0 / BIN_HZ) == 32
    reference = data.log_spectrogram(tone(1000.0, 5.0, SR), SR, centre_s=2.5)
    assert abs(spectrogram[0, 32].mean().item() - reference[0, 32].mean().item()) < 0.05  # same level at any rate


def test_stft_matches_torch_stft():
    wave = np.random.default_rng(0).normal(0, 0.1, size=70000).astype(np.float32)
    window = torch.from_numpy(wave[SR:SR + 3 * SR])  # centre 2.5 s -> seconds 1..4
    stft = torch.stft(window, n_fft=512, hop_length=160, win_length=400, window=torch.hann_window(400),
                      center=True, return_complex=True)  # (257, 301)
    reference = torch.log(stft.abs()[:, :300] + data.LOG_FLOOR)
    assert torch.allclose(data.log_spectrogram(wave, SR, centre_s=2.5)[0], reference, atol=1e-3)


def test_resampler_is_band_limited_and_keeps_length():
    assert len(data.resample(tone(100.0, 5.0, 44100), 44100, SR)) == 80000
    assert len(data.resample(tone(100.0, 5.0, 8000), 8000, SR)) == 80000
    aliased = data.resample(tone(12000.0, 5.0, 48000), 48000, SR)  # above the 8 kHz Nyquist: must vanish
    assert np.sqrt(np.mean(aliased ** 2)) < 1e-3
    kept = data.resample(tone(3000.0, 5.0, 48000), 48000, SR)
    assert np.sqrt(np.mean(kept ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert np.abs(kept - tone(3000.0, 5.0, SR)).max() < 1e-3


def test_silence_is_finite():
    spectrogram = data.log_spectrogram(np.zeros(5 * SR, dtype=np.float32), SR, centre_s=0.5)
    assert torch.isfinite(spectrogram).all()
    assert spectrogram.max().item() == pytest.approx(np.log(data.LOG_FLOOR), abs=1e-3)


def test_short_and_long_clips():
    short = data.log_spectrogram(tone(1000.0, 0.5, 22050), 22050, centre_s=4.5)  # 0.5 s: zero-padded
    assert short.shape == (1, 257, 300) and torch.isfinite(short).all()
    assert short[0, 32, 1:45].min() > 0 and short[0, :, 55:].max() < -10  # sound in the first 0.5 s only
    long_wave = np.zeros(12 * SR, dtype=np.float32)
    long_wave[6 * SR:9 * SR] = tone(1000.0, 3.0, SR)  # sound in seconds 6..9 and 10..12 of a 12 s clip
    long_wave[10 * SR:] = tone(1000.0, 2.0, SR)
    assert data.log_spectrogram(long_wave, SR, centre_s=7.5)[0, 32, 5:295].min() > 0
    assert data.log_spectrogram(long_wave, SR, centre_s=4.5)[0].max() < -10  # window 3..6 s: silent
    clamped = data.log_spectrogram(long_wave, SR, centre_s=11.5)[0]  # window clamped to 9..12 s
    assert clamped[:, :95].max() < -10 and clamped[32, 105:].min() > 0


def test_window_is_centred_on_the_frame_and_clamped(tmp_path):
    wave = np.zeros(5 * SR, dtype=np.float32)
    wave[4 * SR:] = tone(1000.0, 1.0, SR)  # sound only during second 5 (frame 5)
    spectrograms = {frame: data.log_spectrogram(wave, SR, centre_s=frame - 0.5) for frame in data.FRAMES}
    assert spectrograms[1].max() < -10 and spectrograms[3].max() < -10  # windows 0..3 s and 1..4 s: silent
    # frame 5: 3..6 s clamped to 2..5 s
    assert spectrograms[5][0, 32, 205:].min() > 0 and spectrograms[5][0, :, :195].max() < -10
    assert torch.equal(spectrograms[4], spectrograms[5])  # frame 4's window is 2..5 s too
    middle = np.zeros(5 * SR, dtype=np.float32)
    middle[2 * SR:3 * SR] = tone(1000.0, 1.0, SR)  # sound only during second 3: its frames move with the window
    for frame, (first, last) in {1: (200, 300), 2: (200, 300), 3: (100, 200), 4: (0, 100), 5: (0, 100)}.items():
        spectrogram = data.log_spectrogram(middle, SR, centre_s=frame - 0.5)[0]  # windows 0-3 0-3 1-4 2-5 2-5 s
        assert spectrogram[32, first + 5:last - 5].min() > 0
        outside = torch.cat([spectrogram[:, :max(first - 5, 0)], spectrogram[:, last + 5:]], dim=1)
        assert outside.max() < -10
    # the same through a stereo 44.1 kHz file
    path = tmp_path / "clip.wav"
    stereo = np.stack([data.resample(wave, SR, 44100), np.zeros(5 * 44100, dtype=np.float32)], axis=1)
    soundfile.write(path, stereo, 44100, subtype="FLOAT")
    mono, rate = data.read_wav(path)
    assert rate == 44100 and mono.shape == (5 * 44100,) and mono.dtype == np.float32
    assert np.abs(mono - stereo.mean(axis=1)).max() < 1e-6
    from_file = data.log_spectrogram(mono, rate, centre_s=4.5)
    assert from_file[0, 32, 205:].min() > 0 and from_file[0, :, :190].max() < -10


# -----------------------------------------------------------------------------
# bad data: DataError with a one-line message naming the path

def raises_naming(path, match=""):
    return pytest.raises(data.DataError, match=rf"{Path(path)}.*{match}")


def test_wrong_root(tmp_path):
    with raises_naming(tmp_path, "Single-source"):
        data.AVSBench(tmp_path, "s4", "train")
    with raises_naming(tmp_path / "nowhere", "not a folder"):
        data.AVSBench(tmp_path / "nowhere", "ms3", "train")


@pytest.mark.parametrize("subset", SUBSETS)
def test_missing_frame_and_val_mask(broken_root, subset):
    dataset = data.AVSBench(broken_root, subset, "val")
    frame, mask = dataset.items[2].image_path, dataset.items[4].mask_path
    frame.unlink()
    with raises_naming(frame, "missing"):
        data.AVSBench(broken_root, subset, "val")
    frame.write_bytes(b"")  # exists again, but empty
    mask.unlink()
    with raises_naming(mask, "missing"):
        data.AVSBench(broken_root, subset, "val")


def test_missing_wav(broken_root):
    wav = data.AVSBench(broken_root, "ms3", "test").items[0].wav_path
    wav.unlink()
    with raises_naming(wav, "missing"):
        data.AVSBench(broken_root, "ms3", "test")


@pytest.mark.parametrize("subset", SUBSETS)
def test_corrupt_and_truncated_png(broken_root, subset):
    dataset = data.AVSBench(broken_root, subset, "val")
    frame, mask = dataset.items[0].image_path, dataset.items[1].mask_path
    frame.write_bytes(frame.read_bytes()[: len(frame.read_bytes()) // 2])
    with raises_naming(frame, "corrupt or truncated"):
        dataset[0]
    mask.write_bytes(b"not a png at all")
    with raises_naming(mask, "corrupt or truncated"):
        dataset[1]
    other_mask = dataset.items[2].mask_path
    Image.new("L", (100, 100)).save(other_mask)
    with raises_naming(other_mask, "100x100"):
        dataset[2]


def test_truncated_and_corrupt_wav(broken_root):
    dataset = data.AVSBench(broken_root, "s4", "val")
    wav = dataset.items[0].wav_path
    wav.write_bytes(wav.read_bytes()[:50000])
    with raises_naming(wav, "truncated"):
        dataset[0]
    wav.write_bytes(b"RIFF\x00\x00\x00\x00garbage")
    with raises_naming(wav, "corrupt"):
        dataset[1]
    wav.write_bytes(b"")
    with raises_naming(wav, "corrupt"):
        data.read_wav(wav)


@pytest.mark.parametrize("subset", SUBSETS)
def test_csv_with_wrong_columns(broken_root, subset):
    rows = meta_rows(broken_root, subset)
    path = write_meta_rows(broken_root, subset, [rows[0][1:]] + rows[1:])
    with raises_naming(path, "header"):
        data.AVSBench(broken_root, subset, "train")
    path = write_meta_rows(broken_root, subset, rows[:2] + [rows[2][:1]] + rows[3:])
    with raises_naming(path, "line 3 has 1 columns"):
        data.AVSBench(broken_root, subset, "train")


def test_ms3_csv_columns_read_by_position(broken_root):
    rows = meta_rows(broken_root, "ms3")
    write_meta_rows(broken_root, "ms3", [["VID", "Split", "extra"]] + [row + ["x"] for row in rows[1:]])
    assert data.AVSBench(broken_root, "ms3", "val").videos == [row[0] for row in rows[1:] if row[1] == "val"]


def test_empty_split_and_unknown_category(broken_root):
    rows = meta_rows(broken_root, "s4")
    path = write_meta_rows(broken_root, "s4", [row for row in rows if row[3] != "val"])
    with raises_naming(path, "no videos in split 'val'"):
        data.AVSBench(broken_root, "s4", "val")
    write_meta_rows(broken_root, "s4", rows[:1] + [rows[1][:2] + ["unicorn_singing"] + rows[1][3:]] + rows[2:])
    with raises_naming(path, "unknown category 'unicorn_singing'"):
        data.AVSBench(broken_root, "s4", "test")
    write_meta_rows(broken_root, "s4", rows[:1] + [rows[1][:3] + ["training"]] + rows[2:])
    with raises_naming(path, "split 'training'"):
        data.AVSBench(broken_root, "s4", "test")


def test_error_line_from_a_dataloader_worker(broken_root):
    dataset = data.AVSBench(broken_root, "ms3", "train")
    frame = dataset.items[0].image_path
    frame.write_bytes(b"\x89PNG broken")
    with pytest.raises(data.DataError) as in_main:
        dataset[0]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1)
    with pytest.raises(data.DataError) as in_worker:
        next(iter(loader))
    assert "Traceback" in str(in_worker.value)
    line = data.error_line(in_worker.value)
    assert line == data.error_line(in_main.value) == str(in_main.value)
    assert "\n" not in line and line.startswith(f"{frame}: corrupt")
    assert data.error_line(ValueError("bad thing\nmore")) == "bad thing"
