"""Nothing silently wrong: what each reader accepts, the data check before training, frames of different sizes,
flags refused at parse time with argparse's one line. Runs and outputs are in test_train_eval.py."""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import data
import eval as evaluation
from data import AVSBench, DataError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def root(tiny_root, tmp_path):
    """A private copy of the tiny synthetic root, to damage."""
    shutil.copytree(tiny_root, tmp_path / "AVSBench")
    return tmp_path / "AVSBench"


def naming(path, match):
    return pytest.raises(DataError, match=rf"^{Path(path)}: .*{match}")


# -----------------------------------------------------------------------------
# readers

def test_nan_and_inf_samples_in_a_wav(root):
    dataset = AVSBench(root, "s4", "test")
    wav = dataset.items[0].wav_path
    wave, rate = soundfile.read(wav, dtype="float32")
    wave[100], wave[2000] = np.nan, np.inf
    soundfile.write(wav, wave, rate, subtype="FLOAT")
    with naming(wav, "2 NaN or infinite samples"):
        dataset.audio(0)
    with naming(wav, "NaN or infinite"):
        dataset.check(show_progress=False)                 # float WAVs are read in full by the check


@pytest.mark.parametrize("value", [0, 257 * 100, 65535])
def test_16_bit_gray_frames_are_scaled_to_8_bits(root, value):
    path = AVSBench(root, "s4", "val").items[0].image_path
    Image.fromarray(np.full((64, 64), value, dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    assert np.array(data.read_frame(path)).reshape(-1, 3).tolist()[0] == [round(value / 257)] * 3


def test_frames_must_be_opaque(root):
    dataset = AVSBench(root, "ms3", "val")
    path = dataset.items[1].image_path
    plain = dataset[1]["image"]
    rgba = Image.open(path).convert("RGBA")
    rgba.save(path)
    assert torch.equal(dataset[1]["image"], plain)                            # opaque alpha: the same frame
    pixels = np.array(rgba)
    pixels[:10, :, 3] = 0
    Image.fromarray(pixels).save(path)
    with naming(path, "transparent pixels"):
        dataset.check(show_progress=False)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_lossy_masks_are_not_binary(root, mode):
    dataset = AVSBench(root, "s4", "val")
    path = dataset.items[0].mask_path
    mask = np.array(Image.open(path).convert("L"))
    mask[mask == 255] = 250
    mask[0, :3] = [3, 127, 255]
    Image.fromarray(mask).convert(mode).save(path)
    found = "0, 3, 127, 250, 255" if mode == "L" else r"0, \(3, 3, 3\), \(127, 127, 127\), \(250, 250, 250\), \(255,"
    with naming(path, f"mask is not binary: 5 values \\({found}"):
        dataset.check(show_progress=False)


def test_any_single_foreground_value_and_palette_labels(root):
    dataset = AVSBench(root, "s4", "val")
    path = dataset.items[0].mask_path
    expected = np.array(Image.open(path)) > 0
    Image.fromarray(expected.astype(np.uint8)).save(path)                     # 0/1 gray
    assert np.array_equal(dataset[0]["mask"][0].numpy() > 0, expected)
    labels = Image.fromarray((expected * np.arange(expected.size).reshape(expected.shape) % 3).astype(np.uint8))
    labels.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])                      # palette indices are labels
    labels.save(path)
    assert np.array_equal(dataset[0]["mask"][0].numpy() > 0, np.array(labels) > 0)


def test_transparent_mask_background_is_background(root):
    dataset = AVSBench(root, "ms3", "test")
    path = dataset.items[0].mask_path
    expected = np.array(Image.open(path)) > 0
    rgba = np.full(expected.shape + (4,), 255, dtype=np.uint8)                # white everywhere ...
    rgba[..., 3] = np.where(expected, 255, 0)                                 # ... opaque only on the object
    Image.fromarray(rgba).save(path)
    assert np.array_equal(dataset[0]["mask"][0].numpy() > 0, expected)
    rgba[0, 0, 3] = 128
    Image.fromarray(rgba).save(path)
    with naming(path, "semi-transparent"):
        dataset[0]


@pytest.mark.parametrize("values,dtype,match", [((0, 1), np.uint8, "only 0 and 1"),
                                                ((0, 40000), np.uint16, "image mode I;16")])
def test_predictions_must_be_8_bit_probabilities(tmp_path, values, dtype, match):
    path = tmp_path / "pred.png"
    Image.fromarray(np.array([values * 8] * 16, dtype=dtype)).save(path)
    with naming(path, match):
        evaluation.read_prediction(path, (16, 16))
    Image.fromarray(np.array([(0, 255) * 8] * 16, dtype=np.uint8)).save(path)
    assert evaluation.read_prediction(path, (16, 16)).mean().item() == 0.5


def rewrite_csv(root, subset, edit):
    path = root / data.SUBSET_DIRS[subset] / data.META_CSVS[subset]
    rows = list(csv.reader(path.open()))
    with path.open("w", newline="") as file:
        csv.writer(file).writerows(edit(rows))
    return path, rows


def test_duplicate_rows_and_videos_in_two_splits(root):
    path, rows = rewrite_csv(root, "s4", lambda rows: rows + [rows[2]])     # 5 videos: lines 2-6
    name, split = rows[2][0], rows[2][3]
    with naming(path, f"line 7: video {name} is listed again \\(line 3, {split}\\)"):
        AVSBench(root, "s4", "train")
    other = "test" if split != "test" else "val"
    rewrite_csv(root, "s4", lambda rows: rows[:-1] + [rows[2][:3] + [other]])
    with naming(path, f"line 7: video {name} is in {other} and in {split} \\(line 3\\)"):
        AVSBench(root, "s4", "val")


# -----------------------------------------------------------------------------
# the check before training, and frames of different sizes

def test_check_finds_what_construction_does_not(root):
    """Construction checks that the files exist; the check decodes frames and masks and reads WAV headers."""
    dataset = AVSBench(root, "s4", "test")
    frame = dataset.items[3].image_path
    frame.write_bytes(frame.read_bytes()[:-200])                  # a valid header, the pixels cut short
    AVSBench(root, "s4", "test")
    with naming(frame, "corrupt or truncated image"):
        dataset.check(show_progress=False)
    frame.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with naming(frame, "corrupt or truncated image \\(UnidentifiedImageError: cannot identify image file\\)$"):
        dataset.check(show_progress=False)
    wav = AVSBench(root, "ms3", "train").items[0].wav_path
    wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    with naming(wav, "corrupt WAV \\(") as raised:
        AVSBench(root, "ms3", "train").check(show_progress=False)
    assert "0x" not in str(raised.value) and "<" not in str(raised.value)


def test_train_refuses_bad_data_before_phase_1(root, tmp_path):
    mask = AVSBench(root, "s4", "test").items[4].mask_path
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 7).save(mask)
    result = run_script("train.py", "--root", str(root), "--out", str(tmp_path / "run"), "--preset", "small",
                        "--workers", "0")
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(f"error: {mask}: mask is not")
    assert "Traceback" not in result.stderr and "PMR" not in result.stdout
    assert not (tmp_path / "run" / "pseudo_masks").exists()
    checked = run_script("train.py", "--root", str(root), "--subset", "ms3", "--check-data")
    assert checked.returncode == 0 and "ms3 train/val/test 3/1/1 videos" in checked.stdout


class AllForeground(torch.nn.Module):
    def predict(self, image, audio):
        return torch.ones(len(image), 1, *image.shape[-2:])


@pytest.mark.parametrize("sizes", [[(48, 48), (64, 40), (33, 71), (48, 48), (90, 90)]])
def test_frames_of_different_sizes(root, sizes):
    """Frames are resized to one size before batching; each frame is scored at its own GT mask's size."""
    dataset = AVSBench(root, "ms3", "val", img_size=32)
    for index, size in enumerate(sizes):
        for path, resample in ((dataset.items[index].image_path, Image.BILINEAR),
                               (dataset.items[index].mask_path, Image.NEAREST)):
            Image.open(path).resize(size, resample).save(path)
    dataset.check(show_progress=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=data.collate)
    scores = evaluation.evaluate(AllForeground(), loader, "cpu")
    expected = [np.mean(np.array(Image.open(item.mask_path)) > 0) for item in dataset.items]
    assert torch.cat(scores.iou).tolist() == pytest.approx(expected)


# -----------------------------------------------------------------------------
# flags: argparse's usage line, exit 2

def run_script(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script,flags,message", [
    ("train.py", ["--batch-size", "0"], "argument --batch-size: must be >= 2, got 0"),
    ("train.py", ["--lr", "-1"], "argument --lr: must be >= 0.0, got -1.0"),
    ("train.py", ["--tau", "0"], "argument --tau: must be > 0.0, got 0.0"),
    ("train.py", ["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    ("train.py", ["--workers", "-1"], "argument --workers: must be >= 0, got -1"),
    ("train.py", ["--img-size", "big"], "argument --img-size: expected an integer, got 'big'"),
    ("train.py", ["--device", "gpu"], "argument --device: 'gpu' is not a device; use auto, cpu, cuda or cuda:N"),
    ("eval.py", ["x.pt", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    ("eval.py", ["x.pt", "--worst", "-2"], "argument --worst: must be >= 0, got -2"),
    ("data.py", ["synth", "--out", "x", "--subset", "s4", "--videos", "9", "--seed", "0", "--size", "0"],
     "argument --size: must be >= 16, got 0"),
])
def test_bad_flags_are_usage_errors(script, flags, message):
    result = run_script(script, *flags)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith(message), result.stderr


def test_unavailable_cuda_is_a_usage_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_script("train.py", "--device", "cuda")
    assert result.returncode == 2 and "argument --device: cuda: CUDA is not available" in result.stderr


@pytest.mark.parametrize("make", ["file", "under a file"])
def test_out_must_be_a_writable_folder(tiny_root, tmp_path, make):
    (tmp_path / "taken").write_text("notes")
    out = tmp_path / "taken" if make == "file" else tmp_path / "taken" / "run"
    result = run_script("train.py", "--root", str(tiny_root), "--out", str(out))
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and line.startswith(f"error: {out}: --out is") and "Traceback" not in result.stderr
