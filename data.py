"""AVSBench data: the on-disk layout (S4 / MS3), frame + audio + mask loading, and a synthetic AVSBench.

    dataset = AVSBench("AVSBench", subset="s4", split="val")   # one item per frame, 5 frames per video
    python data.py synth --out demo_data --subset s4 --videos 20 --seed 0

Every bad-data problem raises DataError with a one-line message naming the file or folder.
"""
import argparse
import colorsys
import csv
import io
import itertools
import json
import os
import re
import shutil
import string
import sys
import time
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Tuple

import av
import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate
from tqdm import tqdm

# -----------------------------------------------------------------------------
# the layout (see reference.md section 1)

S4_CATEGORIES = [
    "ambulance_siren", "baby_laughter", "cap_gun_shooting", "cat_meowing", "chainsawing_trees",
    "coyote_howling", "dog_barking", "driving_buses", "female_singing", "helicopter", "horse_clip-clop",
    "lawn_mowing", "lions_roaring", "male_speech", "mynah_bird_singing", "playing_acoustic_guitar",
    "playing_glockenspiel", "playing_piano", "playing_tabla", "playing_ukulele", "playing_violin", "race_car",
    "typing_on_computer_keyboard",
]
SPLITS = ("train", "val", "test")
FRAMES = (1, 2, 3, 4, 5)  # one frame per second of the 5 s clip
SUBSET_DIRS = {"s4": "Single-source", "ms3": "Multi-sources"}
META_CSVS = {"s4": "s4_meta_data.csv", "ms3": "ms3_meta_data.csv"}
DATA_DIRS = {"s4": "s4_data", "ms3": "ms3_data"}
S4_COLUMNS = ["name", "start_time", "category", "split"]
MS3_COLUMNS = ["video_id", "split"]
SYNTH_MARKER = "SYNTHETIC.txt"  # written by synthesize(); only folders holding it may be overwritten

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# audio features
SAMPLE_RATE = 16000
WINDOW_SECONDS = 3.0
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)  # 48000
N_FFT = 512       # -> 257 frequency bins of 31.25 Hz
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_SPEC_FRAMES = 300
LOG_FLOOR = 1e-7
HANN_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)  # periodic Hann, (400,)
FFT_WINDOW = np.pad(HANN_WINDOW, (N_FFT - WIN_LENGTH) // 2)  # centred in the 512-sample FFT frame, (512,)


class DataError(Exception):
    """Bad data on disk (missing / corrupt / inconsistent); the message is one line naming the file or folder."""


def error_line(exc) -> str:
    """An exception's own one-line message (DataError and other one-line errors). An exception raised in a
    DataLoader worker is re-raised by torch with the worker's traceback as its message, whose last line is
    'module.Class: <message>': return just that message."""
    text = str(exc)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "Original Traceback" in text:
        return lines[-1].split(": ", 1)[-1]
    return lines[0]


def describe(exc, path=None) -> str:
    """A library exception as one short line, for embedding in a DataError message (which names the path)."""
    text = " ".join(str(exc).split())
    if path is not None:
        text = text.replace(f" '{path}'", "").replace(f" {path}", "")
    return f"{type(exc).__name__}: {text}"


# -----------------------------------------------------------------------------
# command-line values, checked by argparse (its one-line usage error, exit 2)

def checked(kind, check=None):
    """An argparse type: text -> kind(text), then check(value), which raises ValueError saying what is wrong."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            if check is not None:
                check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    parse.__name__ = kind.__name__
    return parse


def at_least(low):
    def check(value):
        if value < low:
            raise ValueError(f"must be >= {low}, got {value}")
    return check


positive_int, non_negative_int = checked(int, at_least(1)), checked(int, at_least(0))


def device_name(text):
    """An argparse type: auto, cpu, cuda or cuda:N, and available here."""
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: only cpu and cuda devices are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


class LogLines:
    """A stream for tqdm when stderr is not a terminal: each redraw becomes one plain line."""

    def write(self, text):
        text = text.replace("\r", "").strip()
        if text:
            sys.stderr.write(text + "\n")

    def flush(self):
        sys.stderr.flush()


def progress(iterable, desc, disable=False, **kw):
    """A progress bar: tqdm on a terminal; in a log file, a plain line a minute instead of redraws."""
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, disable=disable, **kw)
    return tqdm(iterable, desc=desc, leave=False, disable=disable, mininterval=60, maxinterval=60, file=LogLines(),
                **kw)


def writable_folder(path, flag="--out") -> Path:
    """Create the output folder if needed and check that a file can be written in it; DataError otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: {flag} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"{path}: {flag} is not a writable folder ({describe(exc)})") from None
    return path


def subset_root(root, subset) -> Path:
    """The subset folder ('Single-source' / 'Multi-sources'): root is the AVSBench folder or that folder itself."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: --root is not a folder")
    if (root / SUBSET_DIRS[subset]).is_dir():
        return root / SUBSET_DIRS[subset]
    if (root / META_CSVS[subset]).is_file() or (root / DATA_DIRS[subset]).is_dir():
        return root
    raise DataError(f"{root}: holds neither {SUBSET_DIRS[subset]}/ nor {META_CSVS[subset]}; "
                    f"--root must be the AVSBench folder or its {SUBSET_DIRS[subset]}/ folder")


class VideoRow(NamedTuple):
    video: str
    category: int            # index into S4_CATEGORIES; -1 for MS3
    category_name: Optional[str]
    split: str


def read_meta(subset_dir: Path, subset: str) -> list:
    """The subset's metadata csv as VideoRows, in csv order, validated."""
    path = subset_dir / META_CSVS[subset]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: missing metadata csv") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable csv ({describe(exc)})") from exc
    reader = csv.reader(io.StringIO(text))
    header = [cell.strip().lower() for cell in next(reader, [])]
    if subset == "s4" and header != S4_COLUMNS:
        raise DataError(f"{path}: header is {','.join(header) or '(empty)'}, expected {','.join(S4_COLUMNS)}")
    if subset == "ms3" and (len(header) < 2 or header[1] in SPLITS):
        raise DataError(f"{path}: header is {','.join(header) or '(empty)'}, expected {','.join(MS3_COLUMNS)}")
    rows, seen = [], {}                                    # video -> (line, split) of its first row
    for cells in reader:
        cells = [cell.strip() for cell in cells]
        if not any(cells):
            continue
        where = f"{path}: line {reader.line_num}"
        if (subset == "s4" and len(cells) != len(S4_COLUMNS)) or len(cells) < 2:
            raise DataError(f"{where} has {len(cells)} columns, the header has {len(header)}")
        if subset == "s4":
            name, _start_time, category_name, split = cells
            if category_name not in S4_CATEGORIES:
                raise DataError(f"{where}: unknown category '{category_name}'")
            row = VideoRow(name, S4_CATEGORIES.index(category_name), category_name, split)
        else:
            row = VideoRow(cells[0], -1, None, cells[1])  # MS3: first two columns by position
        if row.split not in SPLITS:
            raise DataError(f"{where}: split '{row.split}' is not one of {'/'.join(SPLITS)}")
        if row.video in seen:
            line, split = seen[row.video]
            raise DataError(f"{where}: video {row.video} is listed again (line {line}, {split})" if split == row.split
                            else f"{where}: video {row.video} is in {row.split} and in {split} (line {line})")
        seen[row.video] = (reader.line_num, row.split)
        rows.append(row)
    return rows


def video_files(subset_dir: Path, subset: str, split: str, video: str, category_name: Optional[str]):
    """Paths of one video's files: (5 frame PNGs, WAV, 5 GT-mask PNGs or None where AVSBench has none, 5 keys).
    A key is the frame's path relative to gt_masks without extension; it names pseudo masks and predictions."""
    data = subset_dir / DATA_DIRS[subset]
    if subset == "s4":
        folder = f"{split}/{category_name}/{video}"
        frames = [data / "visual_frames" / folder / f"{video}_{i}.png" for i in FRAMES]
        wav = data / "audio_wav" / split / category_name / f"{video}.wav"
        frames_with_mask = (1,) if split == "train" else FRAMES
    else:
        folder = f"{split}/{video}"
        frames = [data / "visual_frames" / video / f"{video}.mp4_{i}.png" for i in FRAMES]  # no split folder
        wav = data / "audio_wav" / split / f"{video}.wav"
        frames_with_mask = FRAMES
    keys = [f"{folder}/{video}_{i}" for i in FRAMES]
    masks = [data / "gt_masks" / f"{key}.png" if i in frames_with_mask else None for i, key in zip(FRAMES, keys)]
    return frames, wav, masks, keys


# -----------------------------------------------------------------------------
# images and masks

def read_png(path) -> Image.Image:
    """A fully decoded PIL image; DataError if missing, corrupt or truncated."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise DataError(f"{path}: missing file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({describe(exc, path)})") from exc


def png_size(path):
    """(width, height) of an image, from its header only."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise DataError(f"{path}: missing file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: corrupt image ({describe(exc, path)})") from exc


# What the readers accept. 16-bit gray is scaled to 8 bits (65535 -> 255); alpha must be 0 or 255 everywhere:
# frames must be opaque, masks count transparent pixels as background. Anything else is a DataError.
EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "CMYK", "YCbCr")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("LA", "PA", "RGBA")
IMAGE_MODES = EIGHT_BIT_MODES + SIXTEEN_BIT_MODES + ALPHA_MODES


def check_mode(path, mode):
    if mode not in IMAGE_MODES:
        raise DataError(f"{path}: unsupported image mode {mode} (expected 8-bit gray, palette or RGB, 16-bit gray, "
                        "with or without alpha)")


def split_alpha(path, image: Image.Image):
    """(image without its alpha band, alpha as bool (H, W) opaque, or None); DataError if alpha is not 0/255."""
    check_mode(path, image.mode)
    if image.mode not in ALPHA_MODES:
        return image, None
    alpha = np.asarray(image.getchannel("A"))
    if not np.isin(alpha, (0, 255)).all():
        raise DataError(f"{path}: semi-transparent pixels (alpha values between 0 and 255)")
    return image.convert(image.mode[:-1]), alpha == 255


def gray16_to_8(path, image: Image.Image) -> Image.Image:
    """A 16-bit gray image as 8-bit gray (65535 -> 255); 8-bit images unchanged."""
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image).astype(np.int64)
    if values.min() < 0 or values.max() > 65535:
        raise DataError(f"{path}: {image.mode} image with values outside 0..65535")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))


def read_frame(path) -> Image.Image:
    """A video frame as an 8-bit RGB image; DataError if it is transparent anywhere."""
    image, opaque = split_alpha(path, read_png(path))
    if opaque is not None and not opaque.all():
        raise DataError(f"{path}: frame has transparent pixels ({(~opaque).mean():.0%} of the frame)")
    return gray16_to_8(path, image).convert("RGB")


# Per-item work is PIL + numpy (single-threaded): small multi-threaded torch ops get very slow in a busy process.

class Augmentation(NamedTuple):
    """One training frame's augmentation: resize to `resized` px square, keep the img_size square at (left, top),
    then flip left-right or not. Identity: resized = img_size, (0, 0), no flip."""
    resized: int
    left: int
    top: int
    flip: bool


def draw_augmentation(mode: Optional[str], img_size: int, key) -> Augmentation:
    """mode None: none; "flip": a horizontal flip with p = 0.5; "crop-flip" (the WS-AVS release's, as EZ-VSL's):
    resize to 1.1 x img_size, a random img_size crop, then the flip. Drawn from `key` alone (seed, epoch, index),
    so any number of loader workers, and a resumed epoch, see the same augmentation."""
    rng = np.random.default_rng(key)
    flip = mode is not None and bool(rng.random() < 0.5)
    resized = round(1.1 * img_size) if mode == "crop-flip" else img_size
    left, top = (int(v) for v in rng.integers(0, resized - img_size + 1, size=2))
    return Augmentation(resized, left, top, flip)


def augment_image(image: Image.Image, aug: Augmentation, img_size: int, resample) -> Image.Image:
    if image.size != (aug.resized, aug.resized):
        image = image.resize((aug.resized, aug.resized), resample)
    if aug.resized != img_size:
        image = image.crop((aug.left, aug.top, aug.left + img_size, aug.top + img_size))
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if aug.flip else image


def image_tensor(image: Image.Image, img_size: int, aug: Optional[Augmentation] = None) -> torch.Tensor:
    """RGB image -> ImageNet-normalised float32 (3, img_size, img_size), resized (and augmented)."""
    image = augment_image(image, aug or Augmentation(img_size, 0, 0, False), img_size, Image.BILINEAR)
    pixels = (np.asarray(image, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # (S, S, 3)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # (3, S, S)


def load_image(path, img_size: int, aug: Optional[Augmentation] = None):
    """RGB frame file -> (image_tensor, native (width, height))."""
    image = read_frame(path)
    return image_tensor(image, img_size, aug), image.size


def mask_foreground(path, image: Image.Image) -> np.ndarray:
    """A binary GT mask as bool (H, W). Palette masks are label maps: any non-zero index is foreground. Gray and
    RGB masks must hold 0 and at most one other value (any non-zero value is foreground, as AVSBench's loader
    reads them); more values mean lossy compression or anti-aliasing: a DataError naming some of them.
    Transparent pixels are background."""
    image, opaque = split_alpha(path, image)
    width, height = image.size
    values = np.asarray(image).reshape(height, width, -1)                    # (H, W, bands)
    foreground = values.any(axis=-1)                                         # (H, W)
    if opaque is not None:
        foreground &= opaque
    if image.mode != "P" and foreground.any():
        colours = values[foreground]                                         # (n, bands)
        if not (colours == colours[0]).all():
            found = np.unique(colours.reshape(len(colours), -1), axis=0)
            shown = ", ".join(str(tuple(int(v) for v in c)) if len(c) > 1 else str(int(c[0])) for c in found[:4])
            raise DataError(f"{path}: mask is not binary: {len(found) + 1} values (0, {shown}"
                            f"{', ...' if len(found) > 4 else ''}); expected 0 and one foreground value")
    return foreground


def load_mask(path, frame_size) -> torch.Tensor:
    """GT mask PNG (palette, gray, RGB...) -> float32 (1, H, W) at its native size (see mask_foreground)."""
    image = read_png(path)
    if image.size != frame_size:
        raise DataError(f"{path}: mask is {image.size[0]}x{image.size[1]} but its frame is "
                        f"{frame_size[0]}x{frame_size[1]}")
    return torch.from_numpy(mask_foreground(path, image).astype(np.float32))[None]  # (1, H, W)


def load_pseudo_mask(path, img_size: int, aug: Optional[Augmentation] = None) -> torch.Tensor:
    """8-bit pseudo mask PNG (>127 = foreground) -> float32 (1, img_size, img_size), resized nearest, augmented
    exactly as its frame."""
    image = read_png(path).convert("L")
    image = augment_image(image, aug or Augmentation(img_size, 0, 0, False), img_size, Image.NEAREST)
    return torch.from_numpy((np.asarray(image) > 127).astype(np.float32))[None]  # (1, S, S)


def write_mask_png(path, prob_or_mask):
    """Save an (H, W) array in [0, 1] (probabilities or a binary mask) as an 8-bit 0..255 grayscale PNG."""
    values = prob_or_mask.detach().cpu().numpy() if torch.is_tensor(prob_or_mask) else np.asarray(prob_or_mask)
    values = values.squeeze()
    if values.ndim != 2:
        raise ValueError(f"write_mask_png({path}): expected an HxW array, got shape {values.shape}")
    gray = np.round(np.clip(values.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gray).save(path)  # uint8 (H, W) -> mode L


# -----------------------------------------------------------------------------
# audio

def check_wav_complete(path, head: bytes, file_size: int):
    """libsndfile silently reads a truncated WAV; compare the data chunk's declared size with the file's.
    head: the file's first bytes (the chunk headers before the data chunk)."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return  # not a RIFF/WAVE file: soundfile decides
    offset = 12
    while offset + 8 <= len(head):
        chunk_id, chunk_size = head[offset:offset + 4], int.from_bytes(head[offset + 4:offset + 8], "little")
        if chunk_id == b"data":
            available = file_size - offset - 8
            if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:  # 0 / -1: size unknown (streamed)
                raise DataError(f"{path}: truncated WAV (data chunk declares {chunk_size} bytes, "
                                f"file holds {available})")
            return
        offset += 8 + chunk_size + (chunk_size & 1)  # chunks are word aligned


def soundfile_reason(exc) -> str:
    """libsndfile's reason without the file object it names ('Error opening <...>: Format not recognised.')."""
    return " ".join(str(exc).split(": ")[-1].split()) or type(exc).__name__


def wav_header(path):
    """soundfile's header info of a WAV (rate, channels, frames, subtype), checked for truncation."""
    try:
        with open(path, "rb") as file:
            head = file.read(65536)
            size = file.seek(0, io.SEEK_END)
            file.seek(0)
            check_wav_complete(path, head, size)
            info = soundfile.info(file)
    except FileNotFoundError:
        raise DataError(f"{path}: missing file") from None
    except (RuntimeError, ValueError, EOFError, TypeError) as exc:
        raise DataError(f"{path}: corrupt WAV ({soundfile_reason(exc)})") from exc
    except OSError as exc:
        raise DataError(f"{path}: unreadable WAV ({describe(exc)})") from exc
    if info.frames == 0:
        raise DataError(f"{path}: WAV holds no samples")
    return info


def read_wav(path):
    """WAV -> (mono float32 (T,) in [-1, 1], sample rate); channels are averaged. DataError if unreadable,
    empty, or holding NaN / inf samples (float WAVs can)."""
    wav_header(path)
    try:
        wave, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)  # (T, C)
    except (RuntimeError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: corrupt WAV ({soundfile_reason(exc)})") from exc
    finite = np.isfinite(wave)
    if not finite.all():
        raise DataError(f"{path}: WAV holds {(~finite).sum()} NaN or infinite samples")
    return wave.mean(axis=1), sample_rate  # (T,)


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of (T,) by truncating / zero-padding its spectrum (ideal low-pass at the lower
    Nyquist frequency); the output has round(T * rate_out / rate_in) samples."""
    if rate_in == rate_out:
        return wave
    n_in = len(wave)
    n_out = max(1, round(n_in * rate_out / rate_in))
    spectrum = np.fft.rfft(wave)  # (n_in // 2 + 1,)
    n_shared = min(n_in, n_out) // 2 + 1
    resized = np.zeros(n_out // 2 + 1, dtype=spectrum.dtype)  # (n_out // 2 + 1,)
    resized[:n_shared] = spectrum[:n_shared]
    if min(n_in, n_out) % 2 == 0:
        resized[n_shared - 1] = 0  # the shorter signal's Nyquist bin mixes + and - frequencies: drop it
    return (np.fft.irfft(resized, n=n_out) * (n_out / n_in)).astype(np.float32)  # (n_out,)


def mono_16k(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """(T,) or (T, C) at any rate -> mono float32 (T',) at SAMPLE_RATE: channels averaged, then resampled."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)  # (T, C) -> (T,)
    return resample(wave, sample_rate, SAMPLE_RATE)


def spectrogram_at(wave: np.ndarray, centre_s: float) -> torch.Tensor:
    """Log-magnitude spectrogram (1, 257, 300) of the 3 s window of a mono 16 kHz wave (T,) centred on centre_s
    (clamped to the clip, zero-padded when the clip is shorter)."""
    start = round((centre_s - WINDOW_SECONDS / 2) * SAMPLE_RATE)
    start = min(max(start, 0), max(len(wave) - WINDOW_SAMPLES, 0))
    window = wave[start:start + WINDOW_SAMPLES]
    window = np.pad(window, (0, WINDOW_SAMPLES - len(window)))  # (48000,)
    # The paper's numbers (22050 Hz, 50 ms window, 25 ms hop) cannot give 257 x 300 from 3 s, so we use a
    # consistent setting: 16 kHz (AVSBench's own WAV rate), 512-point FFT = 257 bins, 25 ms Hann window, 10 ms hop
    # (centred STFT: 301 frames, keep the first 300), and log(|X| + 1e-7), which stays finite for silence.
    padded = np.pad(window, N_FFT // 2, mode="reflect")  # centred frames, as torch.stft(center=True): (48512,)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:N_SPEC_FRAMES]  # (300, 512)
    magnitude = np.abs(np.fft.rfft(frames * FFT_WINDOW, axis=-1))  # (300, 257)
    log_magnitude = np.log(magnitude + LOG_FLOOR).T.astype(np.float32)  # (257, 300)
    return torch.from_numpy(np.ascontiguousarray(log_magnitude))[None]  # (1, 257, 300)


def log_spectrogram(wave: np.ndarray, sample_rate: int, centre_s: float) -> torch.Tensor:
    """Log-magnitude spectrogram (1, 257, 300) of the 3 s window centred on centre_s of a wave (T,) or (T, C) at
    any sample rate (see spectrogram_at)."""
    return spectrogram_at(mono_16k(wave, sample_rate), centre_s)


# -----------------------------------------------------------------------------
# the dataset

class FrameItem(NamedTuple):
    video: str
    frame: int                # 1..5
    category: int             # index into S4_CATEGORIES; -1 for MS3
    category_name: Optional[str]
    image_path: Path
    mask_path: Optional[Path]  # None where AVSBench has no GT mask (S4 train frames 2..5)
    wav_path: Path
    key: str                  # path relative to gt_masks, no extension


class ClipSound:
    """Each clip's sound for a dataset of frames (self.items[i].wav_path, a dict self.waves): the mono 16 kHz wave
    (T,), decoded and resampled once per clip and process (a clip has 5 or 10 frames)."""

    def waveform(self, index) -> np.ndarray:
        path = self.items[index].wav_path
        if path not in self.waves:
            self.waves[path] = mono_16k(*read_wav(path))
        return self.waves[path]

    def cache_audio(self, show_progress=True):
        """Decode every clip of the split into the cache (about 320 kB per 5 s clip), before the loader's workers
        start: they share it."""
        first = sorted({item.wav_path: index for index, item in reversed(list(enumerate(self.items)))}.values())
        for index in progress(first, desc=f"decoding {self.split} audio", disable=not show_progress):
            self.waveform(index)


class AVSBench(ClipSound, torch.utils.data.Dataset):
    """One item per frame of the split's videos (5 per video, in csv order). Every file the split needs is
    checked at construction; a problem raises DataError naming the first missing path."""

    def __init__(self, root, subset="s4", split="train", img_size=224, augment=None, pseudo_mask_dir=None,
                 audio=True):
        if subset not in SUBSET_DIRS:
            raise ValueError(f"subset must be one of {list(SUBSET_DIRS)}, got {subset!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if augment not in (None, "flip", "crop-flip"):
            raise ValueError(f"augment must be None, 'flip' or 'crop-flip', got {augment!r}")
        self.subset, self.split, self.img_size, self.augment = subset, split, img_size, augment
        self.waves = {}                                        # WAV path -> mono 16 kHz wave, see waveform
        self.with_audio = audio                                # False: items without sound (phase 1)
        self.root = subset_root(root, subset)
        self.pseudo_mask_dir = None if pseudo_mask_dir is None else Path(pseudo_mask_dir)
        rows = [row for row in read_meta(self.root, subset) if row.split == split]
        if not rows:
            raise DataError(f"{self.root / META_CSVS[subset]}: no videos in split '{split}'")
        data_dir = self.root / DATA_DIRS[subset]
        if not data_dir.is_dir():
            raise DataError(f"{data_dir}: missing folder")
        self.videos = [row.video for row in rows]
        self.items = []
        for row in rows:
            frames, wav, masks, keys = video_files(self.root, subset, split, row.video, row.category_name)
            for frame, image_path, mask_path, key in zip(FRAMES, frames, masks, keys):
                self.items.append(FrameItem(row.video, frame, row.category, row.category_name,
                                            image_path, mask_path, wav, key))
        self.keys = [item.key for item in self.items]
        for item in self.items:
            needed = [item.image_path, item.mask_path, item.wav_path if item.frame == 1 else None,
                      self.pseudo_mask_path(item) if self.pseudo_mask_dir is not None else None]
            for path in needed:
                if path is not None and not path.is_file():
                    raise DataError(f"{path}: missing file ({subset} {split} needs it)")

    def check(self, show_progress=True, rank=0, world=1):
        """Open every file of the split before any work and validate it: frames decoded (mode, opaque, not
        truncated), GT masks decoded (binary, the size of their frame), WAV headers (complete, non-empty; the
        samples of float WAVs, which can hold NaN). Raises DataError naming the first bad file. Several
        processes share the work: process `rank` of `world` checks every world-th frame."""
        for item in progress(self.items[rank::world], desc=f"checking {self.subset} {self.split}",
                             disable=not show_progress):
            size = read_frame(item.image_path).size
            if item.mask_path is not None:
                load_mask(item.mask_path, size)
            if item.frame == 1 and wav_header(item.wav_path).subtype in ("FLOAT", "DOUBLE"):
                read_wav(item.wav_path)

    def pseudo_mask_path(self, item: FrameItem) -> Path:
        return self.pseudo_mask_dir / f"{item.key}.png"

    def image_path(self, index) -> Path:
        return self.items[index].image_path

    def mask_path(self, index) -> Optional[Path]:
        return self.items[index].mask_path

    def has_gt(self, index) -> bool:
        return self.items[index].mask_path is not None

    def gt_foreground(self, index, frame_size) -> np.ndarray:
        """The item's GT mask as bool (H, W)."""
        return load_mask(self.items[index].mask_path, frame_size)[0].numpy() > 0

    def category_name(self, index) -> Optional[str]:
        return self.items[index].category_name

    def indices_of(self, video) -> list:
        """Item indices of a video's frames, frame 1 first."""
        return [index for index, item in enumerate(self.items) if item.video == video]

    def gt_item(self, index) -> dict:
        """The item without image and audio (for scoring saved predictions): mask, has_mask, video, frame,
        category, key. Never augmented."""
        item = self.items[index]
        return self.labels(item, png_size(item.image_path))

    def labels(self, item: FrameItem, frame_size) -> dict:
        """Everything of an item but image, audio and pseudo mask; the GT mask is (1, Hg, Wg), zeros if none."""
        if item.mask_path is not None:
            mask = load_mask(item.mask_path, frame_size)  # (1, Hg, Wg)
        else:
            mask = torch.from_numpy(np.zeros((1, frame_size[1], frame_size[0]), dtype=np.float32))
        return {"mask": mask, "has_mask": item.mask_path is not None, "video": item.video, "frame": item.frame,
                "category": item.category, "key": item.key}

    def swap_partners(self) -> dict:
        """{item index: the index whose sound it gets when sounds are swapped}: the same frame of the next video in
        the split whose category differs (MS3 has no categories: simply the next video)."""
        category = {item.video: item.category for item in self.items}
        partner = {}
        for k, video in enumerate(self.videos):
            others = [self.videos[(k + j) % len(self.videos)] for j in range(1, len(self.videos))]
            partners = [v for v in others if category[v] < 0 or category[v] != category[video]]
            if not partners:
                raise DataError(f"{self.root}: swapping sounds needs videos of two categories in the split")
            partner.update(zip(self.indices_of(video), self.indices_of(partners[0])))
        return partner

    def __len__(self):
        return len(self.items)

    def audio(self, index) -> torch.Tensor:
        """The log spectrogram (1, 257, 300) of the 3 s around the item's frame."""
        return spectrogram_at(self.waveform(index), centre_s=self.items[index].frame - 0.5)

    def __getitem__(self, index):
        """index: an item number, or (item number, seed, epoch) for a training item, whose augmentation is drawn
        from that key alone (any number of loader workers, and a resumed epoch, see the same)."""
        index, *aug_key = index if isinstance(index, tuple) else (index,)
        item = self.items[index]
        aug = draw_augmentation(self.augment, self.img_size, [*aug_key, index]) if self.augment else None
        image, frame_size = load_image(item.image_path, self.img_size, aug)  # (3, S, S)
        sample = {"image": image, **({"audio": self.audio(index)} if self.with_audio else {})}
        if aug is None:       # training frames carry no GT mask: nothing trains on it, and a crop would move it
            sample.update(self.labels(item, frame_size))
        else:
            sample.update(video=item.video, frame=item.frame, category=item.category, key=item.key)
        if self.pseudo_mask_dir is not None:
            sample["pseudo_mask"] = load_pseudo_mask(self.pseudo_mask_path(item), self.img_size, aug)  # (1, S, S)
        return sample


def collate(samples: list) -> dict:
    """torch's default_collate, except that GT masks (and AVSS class masks) stay lists of (1, H, W) tensors:
    frames are resized to one size, but their masks keep the frames' own sizes, which may differ within a split."""
    kept = {name: [sample.pop(name) for sample in samples] for name in ("mask", "class_mask") if name in samples[0]}
    return {**default_collate(samples), **kept}


# -----------------------------------------------------------------------------
# your own clips: a video in any container and codec FFmpeg reads (PyAV), or a folder of frames and a sound file

MIN_CLIP_SECONDS = 1.0


class Clip(NamedTuple):
    """A clip to run a model on. frames() decodes it again each call: (time in s, RGB uint8 (H, W, 3)) of every
    frame, in order, each shown from its time for 1 / rate s. sound: mono float32 at SAMPLE_RATE, mapped from a
    file, so that a clip of any length runs in constant memory."""
    path: Path
    frames: Callable[[], Iterator[Tuple[float, np.ndarray]]]
    rate: Fraction
    sound: np.ndarray


def open_media(path):
    """An opened PyAV container; DataError if missing or unreadable."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    try:
        return av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable media file ({describe(exc, path)})") from None


def decode_sound(path, scratch: Path) -> np.ndarray:
    """The first audio stream of a media file (a video or a sound file) as mono float32 at SAMPLE_RATE, decoded by
    FFmpeg into the file `scratch` and mapped from it. DataError if it has no audio or lasts under 1 s."""
    with open_media(path) as container:
        if not container.streams.audio:
            raise DataError(f"{path}: no audio stream (the model needs the clip's sound)")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            with open(scratch, "wb") as out:
                for frame in itertools.chain(container.decode(audio=0), [None]):
                    for chunk in resampler.resample(frame):
                        out.write(chunk.to_ndarray().tobytes())
        except av.FFmpegError as exc:
            raise DataError(f"{path}: corrupt audio stream ({describe(exc, path)})") from None
    seconds = scratch.stat().st_size / 4 / SAMPLE_RATE
    if seconds < MIN_CLIP_SECONDS:
        raise DataError(f"{path}: the sound lasts {seconds:.2f} s; at least {MIN_CLIP_SECONDS:.0f} s is needed")
    return np.memmap(scratch, dtype=np.float32, mode="r")


def video_clip(path, scratch: Path) -> Clip:
    """A video file with sound. Frame times count from the first frame (the sound from its first sample)."""
    with open_media(path) as container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        seconds = float(stream.duration * stream.time_base) if stream.duration else None
    if seconds is not None and seconds < MIN_CLIP_SECONDS:
        raise DataError(f"{path}: the video lasts {seconds:.2f} s; at least {MIN_CLIP_SECONDS:.0f} s is needed")
    sound = decode_sound(path, scratch)

    def frames():
        with open_media(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            first = None
            try:
                for index, frame in enumerate(container.decode(stream)):
                    time = frame.time if frame.time is not None else index / rate
                    first = time if first is None else first
                    yield time - first, frame.to_ndarray(format="rgb24")
            except av.FFmpegError as exc:
                raise DataError(f"{path}: corrupt video stream ({describe(exc, path)})") from None
            if first is None:
                raise DataError(f"{path}: the video holds no frames")
    return Clip(Path(path), frames, Fraction(rate), sound)


def natural_key(path: Path):
    """Sort key: frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frames_clip(folder, sound_path, fps: Fraction, scratch: Path) -> Clip:
    """A folder of frame images (PNG or JPEG, in natural name order) taken at `fps`, and its sound file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: --frames is not a folder")
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")), key=natural_key)
    if not paths:
        raise DataError(f"{folder}: no PNG or JPEG frames")
    if len(paths) / fps < MIN_CLIP_SECONDS:
        raise DataError(f"{folder}: {len(paths)} frames at {fps} fps last {len(paths) / fps:.2f} s; at least "
                        f"{MIN_CLIP_SECONDS:.0f} s is needed")
    sound = decode_sound(sound_path, scratch)

    def frames():
        for index, path in enumerate(paths):
            yield index / fps, np.asarray(read_frame(path))
    return Clip(folder, frames, Fraction(fps), sound)


# -----------------------------------------------------------------------------
# AVSBench-semantic (AVSS): per-pixel classes of the sounding objects (reference.md section 1)

AVSS_SETS = ("v1s", "v1m", "v2")
AVSS_FRAMES = {"v1s": 5, "v1m": 5, "v2": 10}         # one frame per second, named 0.jpg ...
AVSS_COLUMNS = ("uid", "a_obj", "split", "label")     # read by name; the release also has vid, s_min, s_sec


def voc_palette(n=256) -> np.ndarray:
    """The PASCAL VOC colour map (n, 3) uint8 that AVSS colour masks use: the bits of class c interleaved over
    R, G, B from the most significant bit down (background black, 1 = (128, 0, 0), 2 = (0, 128, 0), ...)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for c in range(n):
        code = c
        for bit in range(8):
            for channel in range(3):
                palette[c, channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
    return palette


def read_json(path: Path, what: str):
    """A JSON file's content; DataError naming it if missing (`what` it is) or malformed."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed JSON ({describe(exc, path)})") from None


def read_classes(root: Path) -> list:
    """label2idx.json -> class names by index (0 = background): numbers 1..K, each once."""
    path = root / "label2idx.json"
    numbers = read_json(path, "file (AVSS's class list)")
    if not isinstance(numbers, dict) or sorted(numbers.values()) != list(range(1, len(numbers) + 1)):
        raise DataError(f"{path}: expected {{class name: number}} with the numbers 1..K, each once")
    return [name for name, _ in sorted(numbers.items(), key=lambda item: item[1])]


class AVSSVideo(NamedTuple):
    uid: str
    label: str                # the set: v1s, v1m or v2
    split: str
    classes: Tuple[int, ...]  # the video-level sounding classes (indices into the class list), from a_obj


def read_avss_meta(root: Path, classes: list) -> list:
    """metadata.csv as AVSSVideos, validated: the columns uid, a_obj, split and label by name, a_obj the sounding
    classes' names joined by '_' (names use '-'), each in label2idx.json."""
    path = root / "metadata.csv"
    try:
        reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    except FileNotFoundError:
        raise DataError(f"{path}: missing metadata csv") from None
    header = [cell.strip() for cell in next(reader, [])]
    missing = [column for column in AVSS_COLUMNS if column not in header]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} column (header {','.join(header) or '(empty)'}; AVSS's "
                        f"metadata has {', '.join(AVSS_COLUMNS)})")
    column = {name: header.index(name) for name in AVSS_COLUMNS}
    videos, seen = [], set()
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        where = f"{path}: line {reader.line_num}"
        if len(cells) != len(header):
            raise DataError(f"{where} has {len(cells)} columns, the header has {len(header)}")
        uid, a_obj, split, label = (cells[column[name]].strip() for name in AVSS_COLUMNS)
        if split not in SPLITS or label not in AVSS_SETS:
            raise DataError(f"{where}: split {split!r} / label {label!r}: expected {'/'.join(SPLITS)} and "
                            f"{'/'.join(AVSS_SETS)}")
        unknown = [name for name in a_obj.split("_") if name not in classes]
        if unknown or not a_obj:
            raise DataError(f"{where}: a_obj {a_obj!r} holds {', '.join(map(repr, unknown)) or 'no class'}, not in "
                            "label2idx.json")
        if (label, uid) in seen:
            raise DataError(f"{where}: video {label}/{uid} is listed again")
        seen.add((label, uid))
        videos.append(AVSSVideo(uid, label, split, tuple(sorted({classes.index(n) for n in a_obj.split("_")}))))
    return videos


def avss_labelled(label, split) -> Tuple[int, ...]:
    """The frames with masks: v1s train only frame 0, every frame otherwise."""
    return (0,) if (label, split) == ("v1s", "train") else tuple(range(AVSS_FRAMES[label]))


def load_class_mask(path, frame_size, palette_codes, semantic_path=None) -> torch.Tensor:
    """An AVSS colour mask (labels_rgb, RGB in the VOC palette) -> class indices int64 (1, H, W). An exact
    palette match is required (as the official decoder); with labels_semantic beside it, the two must agree."""
    image = read_png(path)
    if image.size != frame_size:
        raise DataError(f"{path}: mask is {image.size[0]}x{image.size[1]} but its frame is "
                        f"{frame_size[0]}x{frame_size[1]}")
    rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    codes = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
    order = np.argsort(palette_codes)
    found = np.searchsorted(palette_codes[order], codes).clip(0, len(order) - 1)
    known = palette_codes[order][found] == codes
    if not known.all():
        y, x = np.argwhere(~known)[0]
        raise DataError(f"{path}: unknown colour {tuple(int(v) for v in rgb[y, x])} at x={x}, y={y} (not the "
                        f"palette colour of any of the {len(palette_codes)} classes)")
    classes = order[found]
    if semantic_path is not None and semantic_path.is_file():
        semantic = np.asarray(read_png(semantic_path))
        if semantic.shape != classes.shape or (semantic != classes).any():
            raise DataError(f"{semantic_path}: disagrees with {path.name} on "
                            f"{int((semantic != classes).sum()) if semantic.shape == classes.shape else 'the size'}"
                            " pixels")
    return torch.from_numpy(classes)[None]


AVSS_DIR = "AVSBench-semantic"


def avss_root(root) -> Path:
    """The AVSS folder (holding metadata.csv): root itself or its AVSBench-semantic/ folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: --root is not a folder")
    if (root / AVSS_DIR).is_dir():
        return root / AVSS_DIR
    if (root / "metadata.csv").is_file() or (root / "label2idx.json").is_file():
        return root
    raise DataError(f"{root}: holds neither {AVSS_DIR}/ nor metadata.csv; --root must be the AVSBench folder or "
                    f"its {AVSS_DIR}/ folder")


class AVSSItem(NamedTuple):
    video: str                # label/uid
    frame: int                # 0-based
    classes: Tuple[int, ...]  # the video's sounding classes
    image_path: Path
    mask_path: Optional[Path]
    wav_path: Path
    key: str                  # label/uid/frame: names predictions and pseudo masks
    category_name: str        # the sounding classes' names, for titles

    @property
    def category(self):       # AVSBench's single-category field: AVSS videos have several (see classes)
        return -1


class AVSS(ClipSound, torch.utils.data.Dataset):
    """AVSBench-semantic: one item per frame of the split's videos of the chosen set(s), with the video-level
    labels (never read from a mask) and, where AVSS has one, the class mask at the frame's own size."""

    def __init__(self, root, split="train", avss_set="all", img_size=224, augment=None, pseudo_mask_dir=None,
                 audio=True):
        self.root, self.split, self.img_size, self.augment = avss_root(root), split, img_size, augment
        self.subset, self.waves, self.with_audio = "avss", {}, audio
        self.pseudo_mask_dir = None if pseudo_mask_dir is None else Path(pseudo_mask_dir)
        self.classes = read_classes(self.root)
        self.palette_codes = (voc_palette(len(self.classes)).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1]))
        sets = AVSS_SETS if avss_set == "all" else (avss_set,)
        rows = [v for v in read_avss_meta(self.root, self.classes) if v.split == split and v.label in sets]
        if not rows:
            raise DataError(f"{self.root / 'metadata.csv'}: no {'/'.join(sets)} videos in split '{split}'")
        self.videos = [f"{v.label}/{v.uid}" for v in rows]
        self.items = []
        for v in rows:
            folder = self.root / v.label / v.uid
            for frame in range(AVSS_FRAMES[v.label]):
                mask = folder / "labels_rgb" / f"{frame}.png" if frame in avss_labelled(v.label, split) else None
                self.items.append(AVSSItem(f"{v.label}/{v.uid}", frame, v.classes, folder / "frames" / f"{frame}.jpg",
                                           mask, folder / "audio.wav", f"{v.label}/{v.uid}/{frame}",
                                           " ".join(self.classes[c] for c in v.classes)))
        self.keys = [item.key for item in self.items]
        for item in self.items:
            pseudo = self.pseudo_mask_dir / f"{item.key}.png" if self.pseudo_mask_dir is not None else None
            for path in (item.image_path, item.mask_path, item.wav_path if item.frame == 0 else None, pseudo):
                if path is not None and not path.is_file():
                    raise DataError(f"{path}: missing file (avss {split} needs it)")

    def check(self, show_progress=True, rank=0, world=1):
        """Every frame, class mask and WAV of the split (this process's share) opened and validated."""
        for item in progress(self.items[rank::world], desc=f"checking avss {self.split}", disable=not show_progress):
            size = read_frame(item.image_path).size
            if item.mask_path is not None:
                self.class_mask(item, size)
            if item.frame == 0:
                read_wav(item.wav_path)

    def class_mask(self, item, frame_size):
        return load_class_mask(item.mask_path, frame_size, self.palette_codes,
                               item.mask_path.parent.parent / "labels_semantic" / item.mask_path.name)

    def labels(self, item) -> torch.Tensor:
        """The video-level multi-hot label (K,) of the sounding classes, background left out."""
        multi_hot = torch.zeros(len(self.classes))
        multi_hot[list(item.classes)] = 1
        return multi_hot

    def indices_of(self, video) -> list:
        return [index for index, item in enumerate(self.items) if item.video == video]

    def has_gt(self, index) -> bool:
        return self.items[index].mask_path is not None

    def image_path(self, index) -> Path:
        return self.items[index].image_path

    def mask_path(self, index) -> Optional[Path]:
        return self.items[index].mask_path

    def gt_foreground(self, index, frame_size) -> np.ndarray:
        """Where any sounding class is, bool (H, W)."""
        return self.class_mask(self.items[index], frame_size)[0].numpy() > 0

    def swap_partners(self) -> dict:
        """Swapped sounds: the same frame (or the last one) of the next video with other sounding classes."""
        partner = {}
        for k, video in enumerate(self.videos):
            mine = self.indices_of(video)
            others = [self.videos[(k + j) % len(self.videos)] for j in range(1, len(self.videos))]
            others = [v for v in others if self.items[self.indices_of(v)[0]].classes != self.items[mine[0]].classes]
            if not others:
                raise DataError(f"{self.root}: swapping sounds needs videos with other sounding classes in the split")
            theirs = self.indices_of(others[0])
            partner.update({i: theirs[min(n, len(theirs) - 1)] for n, i in enumerate(mine)})
        return partner

    def audio(self, index) -> torch.Tensor:
        return spectrogram_at(self.waveform(index), centre_s=self.items[index].frame + 0.5)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        index, *aug_key = index if isinstance(index, tuple) else (index,)
        item = self.items[index]
        aug = draw_augmentation(self.augment, self.img_size, [*aug_key, index]) if self.augment else None
        frame = read_frame(item.image_path)
        sample = {"image": image_tensor(frame, self.img_size, aug),
                  **({"audio": self.audio(index)} if self.with_audio else {}), "labels": self.labels(item), "video": item.video, "frame": item.frame, "key": item.key,
                  "category": -1, "has_mask": item.mask_path is not None}
        if aug is None:      # class masks, and the foreground masks the class-agnostic metrics read
            classes = (self.class_mask(item, frame.size) if item.mask_path is not None else
                       torch.zeros((1, frame.size[1], frame.size[0]), dtype=torch.long))
            sample.update(class_mask=classes, mask=(classes > 0).float())
        if self.pseudo_mask_dir is not None:
            sample["pseudo_mask"] = load_pseudo_mask(self.pseudo_mask_dir / f"{item.key}.png", self.img_size, aug)
        return sample


# -----------------------------------------------------------------------------
# sound-source localisation benchmarks, in the layout EZ-VSL reads them (Flickr-SoundNet test, VGG-SS)

BENCHMARKS = ("flickr", "vggss")
MAP_SIZE = 224                # maps and box masks are compared at 224 x 224, as EZ-VSL does


def flickr_boxes(path) -> np.ndarray:
    """The boxes of one Flickr-SoundNet annotation XML, (k, 4) xmin, ymin, xmax, ymax in 224-px units: every
    annotator's, from <bbox> elements anywhere in the file, in the 256 x 256 frame the annotators saw.
    Children named xmin/ymin/xmax/ymax are read by name, else the last four (EZ-VSL skips the first child)."""
    if not path.is_file():
        raise DataError(f"{path}: missing box file")
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{path}: malformed XML ({describe(exc, path)})") from None
    boxes = []
    for bbox in tree.getroot().iter("bbox"):
        named = {child.tag: child.text for child in bbox}
        texts = ([named[k] for k in ("xmin", "ymin", "xmax", "ymax")] if {"xmin", "ymin", "xmax", "ymax"} <= set(named)
                 else [child.text for child in bbox][-4:])
        try:
            box = [float(t) for t in texts]
        except (TypeError, ValueError):
            raise DataError(f"{path}: a bbox holds {texts}, expected 4 numbers") from None
        if len(box) != 4 or not (0 <= box[0] < box[2] <= 256 and 0 <= box[1] < box[3] <= 256):
            raise DataError(f"{path}: box {box} is not inside the 256 x 256 frame (xmin < xmax, ymin < ymax)")
        boxes.append([v * MAP_SIZE / 256 for v in box])
    if not boxes:
        raise DataError(f"{path}: no <bbox> in the file")
    return np.array(boxes)


def vggss_boxes(path) -> dict:
    """{file id: boxes (k, 4) in 224-px units} of VGG-SS's box JSON: a list of {"file": id, "bbox": [[xmin, ymin,
    xmax, ymax], ...]}, coordinates as fractions of the frame."""
    entries = read_json(path, "box file")
    boxes = {}
    for n, entry in enumerate(entries if isinstance(entries, list) else [None]):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry.get("bbox"):
            raise DataError(f"{path}: entry {n} is not {{\"file\": id, \"bbox\": [[xmin, ymin, xmax, ymax], ...]}}")
        try:
            box = np.array(entry["bbox"], dtype=float).reshape(-1, 4)
        except (TypeError, ValueError):
            raise DataError(f"{path}: entry {n} ({entry['file']}): bbox is not a list of 4 numbers each") from None
        if not ((0 <= box[:, :2]).all() and (box[:, :2] < box[:, 2:]).all() and (box[:, 2:] <= 1).all()):
            raise DataError(f"{path}: entry {n} ({entry['file']}): a box is not inside the frame (fractions "
                            "0 <= xmin < xmax <= 1, 0 <= ymin < ymax <= 1)")
        boxes[entry["file"]] = box * MAP_SIZE
    return boxes


def box_map(boxes, consensus) -> torch.Tensor:
    """The ground-truth map (224, 224) of a frame's boxes, as EZ-VSL builds it: each box covers its pixels;
    Flickr (consensus) sums the annotators' boxes, halves and caps at 1 (0, 0.5 or 1), VGG-SS takes their union."""
    gt = np.zeros((MAP_SIZE, MAP_SIZE))
    for xmin, ymin, xmax, ymax in boxes.astype(int):
        gt[ymin:ymax, xmin:xmax] += 1
    return torch.from_numpy(np.minimum(gt / 2, 1) if consensus else np.minimum(gt, 1)).float()


class LocalisationSet(torch.utils.data.Dataset):
    """A localisation test set: root/frames/{id}.jpg, root/audio/{id}.wav and the boxes, root/Annotations/{id}.xml
    (Flickr-SoundNet) or root/vggss.json (VGG-SS). Every frame in frames/ is scored, and must have its sound and
    boxes; VGG-SS entries whose frame was not downloaded are counted, not scored. An item is the frame, the 3 s
    of sound around the middle of the clip (EZ-VSL's window) and the box map."""

    def __init__(self, root, benchmark, img_size=224):
        if benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
        self.root, self.benchmark, self.img_size, self.split = Path(root), benchmark, img_size, benchmark
        if not (self.root / "frames").is_dir():
            raise DataError(f"{self.root / 'frames'}: missing folder (the layout is frames/, audio/ and "
                            f"{'Annotations/' if benchmark == 'flickr' else 'vggss.json'})")
        frames = sorted(p for p in (self.root / "frames").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not frames:
            raise DataError(f"{self.root / 'frames'}: no JPEG or PNG frames")
        annotated = vggss_boxes(self.root / "vggss.json") if benchmark == "vggss" else None
        self.items = []
        for frame in frames:
            wav = self.root / "audio" / f"{frame.stem}.wav"
            if not wav.is_file():
                raise DataError(f"{wav}: missing file (the sound of {frame.name})")
            if annotated is None:
                boxes = flickr_boxes(self.root / "Annotations" / f"{frame.stem}.xml")
            elif frame.stem in annotated:
                boxes = annotated[frame.stem]
            else:
                raise DataError(f"{self.root / 'vggss.json'}: no boxes for {frame.name}")
            self.items.append((frame.stem, frame, wav, boxes))
        self.annotated = len(annotated) if annotated is not None else len(self.items)
        self.keys = [item[0] for item in self.items]

    def swap_partners(self) -> dict:
        """Swapped sounds: each frame gets the next frame's."""
        if len(self.items) < 2:
            raise DataError(f"{self.root / 'frames'}: swapping sounds needs two frames")
        return {index: (index + 1) % len(self.items) for index in range(len(self.items))}

    def __len__(self):
        return len(self.items)

    def audio(self, index):
        wave = mono_16k(*read_wav(self.items[index][2]))
        return spectrogram_at(wave, centre_s=len(wave) / SAMPLE_RATE / 2)

    def __getitem__(self, index):
        key, frame, _, boxes = self.items[index]
        return {"image": image_tensor(read_frame(frame), self.img_size), "audio": self.audio(index),
                "gt_map": box_map(boxes, consensus=self.benchmark == "flickr"), "key": key}


# -----------------------------------------------------------------------------
# synthetic AVSBench: K categories, each with its own look and its own sound; several objects per frame,
# only some of them sounding, so segmenting the right one needs the audio

SHAPES = ("disc", "square", "triangle", "diamond", "cross", "ring", "hexagon", "star")
URL_SAFE_CHARS = np.array(list(string.ascii_letters + string.digits + "-_"))
SYNTH_SECONDS = 5


def category_look(category: int, num_categories: int):
    """(shape name, hue in [0, 1), stripe angle in radians) of a category."""
    return (SHAPES[category % len(SHAPES)], category / num_categories, np.pi * category / num_categories)


def category_f0(category: int, num_categories: int) -> float:
    """Fundamental frequency of a category's tone: log-spaced from 150 Hz to 3 kHz."""
    return 150.0 * 20.0 ** (category / max(num_categories - 1, 1))


def category_am_rate(category: int) -> float:
    """Amplitude-modulation rate (Hz) of a category's tone, spread over 2..8 Hz by the golden ratio."""
    return 2.0 + 6.0 * ((category * 0.6180339887) % 1.0)


def category_sound(category: int, num_categories: int, rng, seconds=SYNTH_SECONDS) -> np.ndarray:
    """`seconds` at 16 kHz (T,): harmonic tone (partials 1/h below 7.5 kHz) with a category-specific AM rate."""
    t = np.arange(seconds * SAMPLE_RATE) / SAMPLE_RATE
    f0 = category_f0(category, num_categories)
    tone = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi)) / h
               for h in range(1, 5) if h * f0 < 7500)
    envelope = 1.0 - 0.7 * (0.5 + 0.5 * np.sin(2 * np.pi * category_am_rate(category) * t + rng.uniform(0, 2 * np.pi)))
    return tone * envelope


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Boolean (H, W) of a shape of the given radius; dx, dy are pixel offsets from its centre (y points down)."""
    distance = np.hypot(dx, dy)
    if shape == "disc":
        return distance <= radius
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.75 * radius
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= radius
    if shape == "cross":
        arm = 0.3 * radius
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
    if shape == "ring":
        return (distance <= radius) & (distance >= 0.55 * radius)
    if shape == "star":  # five rounded points
        return distance <= radius * (0.6 + 0.4 * np.cos(5 * (np.arctan2(dy, dx) + np.pi / 2)))
    sides = {"triangle": 3, "hexagon": 6}[shape]  # regular polygon: inside all edge half-planes
    normals = np.pi / 2 + 2 * np.pi * np.arange(sides) / sides  # first edge at the bottom
    inside = np.ones(dx.shape, dtype=bool)
    for angle in normals:
        inside &= dx * np.cos(angle) + dy * np.sin(angle) <= radius * np.cos(np.pi / sides)
    return inside


def frame_steps(frames: int) -> np.ndarray:
    """Each frame's offset from the clip's middle, in frames: -2..2 for 5 frames, -4.5..4.5 for 10."""
    return np.arange(frames) - (frames - 1) / 2


def too_close(first, second, frames=5) -> bool:
    """Do two drifting objects (radius, middle-frame centre, velocity) overlap more than slightly in any frame?"""
    (radius_a, centre_a, velocity_a), (radius_b, centre_b, velocity_b) = first, second
    for step in frame_steps(frames):
        offset = centre_a - centre_b + step * (velocity_a - velocity_b)
        if np.hypot(*offset) < 0.9 * (radius_a + radius_b):
            return True
    return False


def place_objects(rng, count: int, size: int, equal_size=False, frames=5):
    """[(radius, middle-frame centre (2,), per-frame drift (2,))] of `count` objects that stay inside the frame
    in all `frames` frames and overlap at most slightly; with equal_size all share one radius."""
    shared_radius = rng.uniform(0.10, 0.175) * size if equal_size else None
    for _ in range(1000):
        placed = []
        for _ in range(count):
            for _ in range(200):
                radius = shared_radius or rng.uniform(0.10, 0.175) * size  # diameter 20..35% of the frame
                velocity = rng.uniform(-0.015, 0.015, size=2) * size
                margin = radius + (frames - 1) / 2 * np.abs(velocity)
                candidate = (radius, rng.uniform(margin, size - margin), velocity)
                if not any(too_close(candidate, other, frames) for other in placed):
                    placed.append(candidate)
                    break
            else:
                break  # no room for this object: start the layout again
        if len(placed) == count:
            return placed
    raise RuntimeError(f"could not place {count} objects in a {size}x{size} frame")


def smooth_field(rng, grid: int, size: int) -> np.ndarray:
    """Random smooth field (size, size) in [0, 1]: a grid x grid noise image upsampled bicubically."""
    noise = torch.from_numpy(rng.random((1, 1, grid, grid)).astype(np.float32))
    field = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=True)[0, 0].numpy()
    return (field - field.min()) / (field.max() - field.min() + 1e-6)


def synth_video(rng, subset: str, num_categories: int, size: int, silent_objects=None, equal_size=False, frames=5):
    """One synthetic video of `frames` seconds: (categories of its objects, indices of the sounding ones,
    frames uint8 (S, S, 3), GT masks int (S, S): 1 + the category of the sounding object seen at each pixel, 0
    elsewhere; audio float32 (T,) at 16 kHz). By default 2-3 objects (S4, one sounding) or 2-4 (MS3 and AVSS,
    one to three sounding, at least one silent); silent_objects=N gives exactly N silent objects beside the
    sounding ones (S4: 1, MS3: 1-3)."""
    if silent_objects is None:
        max_objects = 3 if subset == "s4" else 4
        count = int(rng.integers(2, min(max_objects, num_categories) + 1))
        categories = rng.choice(num_categories, size=count, replace=False)
        if subset == "s4":
            sounding = [int(rng.integers(count))]
        else:  # one to three sounding objects, always at least one silent one
            sounding = sorted(rng.choice(count, size=int(rng.integers(1, min(3, count - 1) + 1)), replace=False))
    else:
        n_sounding = 1 if subset == "s4" else int(rng.integers(1, 4))
        count = n_sounding + silent_objects
        categories = rng.choice(num_categories, size=count, replace=False)
        sounding = sorted(int(i) for i in rng.choice(count, size=n_sounding, replace=False))
    layout = place_objects(rng, count, size, equal_size, frames)
    colours = []
    for category in categories:  # base colour with mild per-object jitter; stripes set the texture
        _, hue, _ = category_look(int(category), num_categories)
        colours.append(colorsys.hsv_to_rgb((hue + rng.uniform(-0.015, 0.015)) % 1.0,
                                           rng.uniform(0.75, 0.9), rng.uniform(0.85, 1.0)))
    background_colours = [np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.3), rng.uniform(0.45, 0.8)))
                          for _ in range(2)]
    blend = smooth_field(rng, 5, size)[..., None]  # (S, S, 1)
    background = background_colours[0] * (1 - blend) + background_colours[1] * blend  # (S, S, 3)
    background += 0.08 * (smooth_field(rng, 24, size)[..., None] - 0.5)  # finer texture
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres, (S, S) each
    stripe_period = max(4.0, size / 28)
    images, masks = [], []
    for step in frame_steps(frames):
        canvas = background.copy()
        owner = np.full((size, size), -1)  # index of the object visible at each pixel, -1 = background
        for index, (category, colour, (radius, centre, velocity)) in enumerate(zip(categories, colours, layout)):
            shape, _, stripe_angle = category_look(int(category), num_categories)
            cx, cy = centre + step * velocity
            dx, dy = xs - cx, ys - cy
            inside = shape_mask(shape, dx, dy, radius)
            stripes = np.sin(2 * np.pi * (dx * np.cos(stripe_angle) + dy * np.sin(stripe_angle)) / stripe_period) > 0
            shade = np.where(stripes, 1.0, 0.7)[..., None]  # (S, S, 1)
            canvas = np.where(inside[..., None], np.array(colour) * shade, canvas)  # later objects occlude
            owner[inside] = index
        canvas += rng.normal(0.0, 0.02, size=canvas.shape)
        images.append(np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8))
        masks.append(np.where(np.isin(owner, sounding), np.append(categories, -1)[owner] + 1, 0))
    audio = sum(rng.uniform(0.5, 1.0) * category_sound(int(categories[index]), num_categories, rng, frames)
                for index in sounding)
    audio = audio + rng.normal(0.0, 0.01, size=audio.shape)
    audio = (0.8 * audio / np.abs(audio).max()).astype(np.float32)
    return [int(category) for category in categories], sounding, images, masks, audio


def random_video_name(rng):
    """A YouTube-like id: 11 url-safe characters + '_' + 6-digit start time; returns (name, start_time)."""
    start_time = int(rng.integers(0, 300))
    return "".join(rng.choice(URL_SAFE_CHARS, size=11)) + f"_{start_time:06d}", start_time


def synthetic_stamp(subset, videos, seed, categories=6, size=224, silent_objects=None, equal_size=False) -> str:
    """The text of SYNTH_MARKER for these settings: a folder whose marker differs was made with others."""
    harder = (f" silent_objects={silent_objects}" if silent_objects is not None else "") + \
        (" equal_size" if equal_size else "")
    return (f"synthetic AVSBench made by data.py: subset={subset} videos={videos} seed={seed} "
            f"categories={categories} size={size}{harder}\n")


def synthesize(out, subset, videos, seed, categories=6, size=224, silent_objects=None, equal_size=False) -> Path:
    """Write a synthetic AVSBench subset into the AVSBench root `out` (exact on-disk layout); returns the subset
    folder. Deterministic for a seed. Replaces an earlier synthetic subset there, never real data.
    silent_objects / equal_size make it harder (see synth_video, place_objects): with equal sizes and N silent
    objects, only the audio says which object sounds."""
    if subset not in SUBSET_DIRS:
        raise ValueError(f"subset must be one of {list(SUBSET_DIRS)}, got {subset!r}")
    if videos < 3:
        raise ValueError(f"need at least 3 videos (one per split), got {videos}")
    if not 2 <= categories <= len(S4_CATEGORIES):
        raise ValueError(f"categories must be in 2..{len(S4_CATEGORIES)}, got {categories}")
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    most_sounding = 1 if subset == "s4" else 3
    if silent_objects is not None and not 0 <= silent_objects <= categories - most_sounding:
        raise ValueError(f"silent objects must be in 0..{categories - most_sounding} with {categories} categories "
                         f"({subset}: up to {most_sounding} sounding), got {silent_objects}")
    subset_dir = Path(out) / SUBSET_DIRS[subset]
    if subset_dir.exists():
        if not (subset_dir / SYNTH_MARKER).is_file():
            raise FileExistsError(f"{subset_dir} exists and was not made by synthesize(); not overwriting it")
        shutil.rmtree(subset_dir)
    subset_dir.mkdir(parents=True)
    (subset_dir / SYNTH_MARKER).write_text(synthetic_stamp(subset, videos, seed, categories, size, silent_objects,
                                                           equal_size))
    rng = np.random.default_rng([seed, list(SUBSET_DIRS).index(subset)])
    num_held_out = max(1, round(0.2 * videos))
    splits = ["train"] * (videos - 2 * num_held_out) + ["val"] * num_held_out + ["test"] * num_held_out
    splits = [splits[index] for index in rng.permutation(videos)]
    csv_rows = [S4_COLUMNS if subset == "s4" else MS3_COLUMNS]
    for split in splits:
        name, start_time = random_video_name(rng)
        object_categories, sounding, frames, masks, audio = synth_video(rng, subset, categories, size,
                                                                        silent_objects, equal_size)
        category_name = S4_CATEGORIES[object_categories[sounding[0]]] if subset == "s4" else None
        csv_rows.append([name, start_time, category_name, split] if subset == "s4" else [name, split])
        frame_paths, wav_path, mask_paths, _ = video_files(subset_dir, subset, split, name, category_name)
        for frame, frame_path, mask, mask_path in zip(frames, frame_paths, masks, mask_paths):
            frame_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(frame_path, compress_level=1)  # uint8 (S, S, 3) -> RGB
            if mask_path is None:
                continue
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            if subset == "s4":  # 8-bit gray 0/255
                Image.fromarray((mask > 0).astype(np.uint8) * 255).save(mask_path)
            else:  # palette PNG, index 1 = foreground
                palette_mask = Image.fromarray((mask > 0).astype(np.uint8))
                palette_mask.putpalette([0, 0, 0, 255, 255, 255])  # turns the L image into a P image
                palette_mask.save(mask_path)
        wav_path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(wav_path, audio, SAMPLE_RATE, subtype="PCM_16")
    with open(subset_dir / META_CSVS[subset], "w", newline="") as file:
        csv.writer(file).writerows(csv_rows)
    return subset_dir


def synthesize_avss(out, videos, seed, categories=6, size=96) -> Path:
    """Write a synthetic AVSBench-semantic into out/AVSBench-semantic (the official layout): videos spread over
    v1s (one sounding object, 5 s), v1m (1-3 sounding, 5 s) and v2 (1-3 sounding, 10 s), each split 60/20/20;
    2-4 objects per frame of distinct categories, the frame size varying by video; a_obj lists the sounding
    classes; colour masks in the VOC palette and class-index masks of the sounding objects. Deterministic for a
    seed; replaces an earlier synthetic set there, never real data."""
    if videos < 9:
        raise ValueError(f"need at least 9 videos (one per split and set), got {videos}")
    if not 2 <= categories <= len(S4_CATEGORIES):
        raise ValueError(f"categories must be in 2..{len(S4_CATEGORIES)}, got {categories}")
    root = Path(out) / AVSS_DIR
    if root.exists():
        if not (root / SYNTH_MARKER).is_file():
            raise FileExistsError(f"{root} exists and was not made by synthesize_avss(); not overwriting it")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / SYNTH_MARKER).write_text(f"synthetic AVSBench-semantic made by data.py: videos={videos} seed={seed} "
                                     f"categories={categories} size={size}\n")
    names = ["background"] + [name.replace("_", "-") for name in S4_CATEGORIES[:categories]]
    (root / "label2idx.json").write_text(json.dumps({name: n + 1 for n, name in enumerate(names)}, indent=1))
    palette = voc_palette(len(names))
    rng = np.random.default_rng([seed, 2])
    per_set = [videos // 3 + (k < videos % 3) for k in range(3)]
    rows = [["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"]]
    for label, count in zip(AVSS_SETS, per_set):
        held_out = max(1, round(0.2 * count))
        splits = ["train"] * (count - 2 * held_out) + ["val"] * held_out + ["test"] * held_out
        for split in (splits[i] for i in rng.permutation(count)):
            uid, start = random_video_name(rng)
            side = size + 8 * int(rng.integers(0, 4))                 # frames differ in size between videos
            object_categories, sounding, frames, masks, audio = synth_video(
                rng, "s4" if label == "v1s" else "ms3", categories, side, frames=AVSS_FRAMES[label])
            folder = root / label / uid
            for sub in ("frames", "labels_rgb", "labels_semantic"):
                (folder / sub).mkdir(parents=True)
            for frame, (image, mask) in enumerate(zip(frames, masks)):
                Image.fromarray(image).save(folder / "frames" / f"{frame}.jpg", quality=95)
                if frame in avss_labelled(label, split):
                    Image.fromarray(palette[mask]).save(folder / "labels_rgb" / f"{frame}.png")
                    Image.fromarray(mask.astype(np.uint8)).save(folder / "labels_semantic" / f"{frame}.png")
            soundfile.write(folder / "audio.wav", audio, SAMPLE_RATE, subtype="PCM_16")
            a_obj = "_".join(names[object_categories[i] + 1] for i in sounding)
            rows.append([f"{uid[:11]}", uid, start // 60, start % 60, a_obj, split, label])
    with open(root / "metadata.csv", "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description="AVSBench data tools")
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="write a synthetic AVSBench subset (exact AVSBench layout)")
    synth.add_argument("--out", required=True, help="AVSBench root to write into (creates Single-source/, "
                       f"Multi-sources/ or {AVSS_DIR}/ there)")
    synth.add_argument("--subset", choices=[*SUBSET_DIRS, "avss"], required=True,
                       help="s4, ms3, or avss (AVSBench-semantic: v1s, v1m and v2 videos, class masks)")
    synth.add_argument("--videos", type=checked(int, at_least(3)), required=True,
                       help="number of videos, split ~60/20/20 (>= 3)")
    synth.add_argument("--seed", type=non_negative_int, required=True)
    synth.add_argument("--categories", type=checked(int, at_least(2)), default=6,
                       help="number of object categories K (2..23)")
    synth.add_argument("--size", type=checked(int, at_least(16)), default=224, help="frame size in pixels (>= 16)")
    synth.add_argument("--silent-objects", type=non_negative_int, help="exactly N silent objects per frame beside the sounding "
                       "one(s) (default: S4 1-2, MS3 1-3, random)")
    synth.add_argument("--equal-size", action="store_true",
                       help="draw all objects of a video at one size, so that size does not tell which one sounds")
    args = parser.parse_args(argv)
    started = time.time()
    if args.subset == "avss" and (args.silent_objects is not None or args.equal_size):
        parser.error("--silent-objects and --equal-size apply to s4 and ms3")
    try:
        writable_folder(args.out)
        if args.subset == "avss":
            subset_dir = synthesize_avss(args.out, args.videos, args.seed, args.categories, args.size)
        else:
            subset_dir = synthesize(args.out, args.subset, args.videos, args.seed, args.categories, args.size,
                                    args.silent_objects, args.equal_size)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    except DataError as exc:
        sys.exit(f"error: {exc}")
    counts = {split: len((AVSS(args.out, split) if args.subset == "avss" else
                          AVSBench(args.out, args.subset, split, args.size)).videos) for split in SPLITS}
    print(f"wrote {args.videos} synthetic {args.subset} videos (train/val/test {counts['train']}/{counts['val']}/"
          f"{counts['test']}) to {subset_dir} in {time.time() - started:.1f}s")


if __name__ == "__main__":
    main()
