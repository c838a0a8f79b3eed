"""eval.py on your own clip: --video (any container FFmpeg reads, through PyAV) and --frames with --audio. The
clips are written here with PyAV: odd sizes, 25 and 30 fps, with and without sound."""
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

import eval as evaluation
from data import SAMPLE_RATE, DataError, video_clip
from test_train_eval import error_line, run_script

def brightness(index):
    return 20 + 4 * index % 220


def write_video(path, seconds, fps, width, height, sound=True):
    """Frame i is uniformly grey at brightness(i); the sound a 440 Hz tone, stereo 44.1 kHz. H.264 in 4:4:4, which
    allows odd sizes."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "10"})
        video.width, video.height, video.pix_fmt = width, height, "yuv444p"
        audio = out.add_stream("aac", rate=44100, layout="stereo") if sound else None
        for i in range(round(seconds * fps)):
            frame = np.full((height, width, 3), brightness(i), np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode())
        if sound:
            t = np.arange(round(seconds * 44100)) / 44100
            tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, len(tone), 1024):
                chunk = av.AudioFrame.from_ndarray(np.stack([tone[start:start + 1024]] * 2), format="fltp",
                                                   layout="stereo")
                chunk.sample_rate, chunk.pts = 44100, start
                out.mux(audio.encode(chunk))
            out.mux(audio.encode())


@pytest.mark.parametrize("fps,width,height", [(25, 64, 48), (30, 63, 47)])
def test_frames_are_sampled_at_the_middle_of_each_second(tmp_path, fps, width, height):
    write_video(tmp_path / "clip.mp4", 2.0, fps, width, height)
    clip = video_clip(tmp_path / "clip.mp4", tmp_path / "sound.f32")
    assert clip.rate == fps and abs(len(clip.sound) / SAMPLE_RATE - 2.0) < 0.05
    samples = list(evaluation.clip_samples(clip, Fraction(1)))
    assert [(k, centre) for k, centre, _ in samples] == [(0, 0.5), (1, 1.5)]
    for (_, centre, rgb) in samples:                  # the frame on screen at 0.5 s and 1.5 s
        shown = int(centre * fps)
        assert rgb.shape == (height, width, 3) and abs(rgb.mean() - brightness(shown)) < 3
    every = list(evaluation.clip_samples(clip, None))
    assert len(every) == 2 * fps
    assert np.allclose([centre for _, centre, _ in every], (np.arange(2 * fps) + 0.5) / fps)


def decoded(path):
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        has_audio = bool(container.streams.audio)
        rate = container.streams.video[0].average_rate
    return frames, has_audio, rate


@pytest.mark.parametrize("fps", ["1", "source"])
def test_video_writes_probabilities_sheet_and_overlay(tmp_path, random_checkpoint, fps):
    write_video(tmp_path / "clip.mp4", 3.0, 30, 63, 47)
    rows = evaluation.main([str(random_checkpoint), "--video", str(tmp_path / "clip.mp4"), "--fps", fps, "--out",
                            str(tmp_path / "out"), "--device", "cpu", "--batch-size", "7"])
    count = 3 if fps == "1" else 90
    assert [k for k, _, _ in rows] == list(range(count))
    probs = sorted((tmp_path / "out" / "probs").glob("*.png"))
    assert len(probs) == count and Image.open(probs[0]).size == (63, 47) and Image.open(probs[0]).mode == "L"
    lines = (tmp_path / "out" / "samples.csv").read_text().splitlines()
    assert lines[0] == "sample,time_s,foreground" and len(lines) == count + 1
    assert Image.open(tmp_path / "out" / "contact_sheet.png").size[0] == 4 * 160
    frames, has_audio, rate = decoded(tmp_path / "out" / "overlay.mp4")
    assert len(frames) == 90 and frames[0].shape == (46, 62, 3) and has_audio and rate == 30


def test_frames_folder_with_a_sound_file(tmp_path, random_checkpoint):
    (tmp_path / "frames").mkdir()
    for i in range(1, 11):                                  # natural order: 2 before 10
        Image.fromarray(np.full((40, 50, 3), 10 * i, np.uint8)).save(tmp_path / "frames" / f"clip_{i}.png")
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(5 * 22050) / 22050)
    soundfile.write(tmp_path / "sound.wav", tone, 22050)
    rows = evaluation.main([str(random_checkpoint), "--frames", str(tmp_path / "frames"), "--audio",
                            str(tmp_path / "sound.wav"), "--fps", "2", "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert [centre for _, centre, _ in rows] == [0.25 + 0.5 * k for k in range(10)]
    frames, has_audio, _ = decoded(tmp_path / "out" / "overlay.mp4")
    assert len(frames) == 10 and has_audio


@pytest.mark.parametrize("case,expected", [
    ("no sound", "no audio stream (the model needs the clip's sound)"),
    ("garbage", "unreadable media file"),
    ("empty", "unreadable media file"),
    ("half a second", "the video lasts 0.48 s; at least 1 s is needed"),     # 12 frames at 25 fps
    ("missing", "no such file"),
])
def test_bad_clips_stop_with_one_line(tmp_path, random_checkpoint, case, expected):
    clip = tmp_path / "clip.mp4"
    if case == "no sound":
        write_video(clip, 2.0, 25, 32, 32, sound=False)
    elif case == "garbage":
        clip.write_bytes(b"not a video at all" * 50)
    elif case == "empty":
        clip.write_bytes(b"")
    elif case == "half a second":
        write_video(clip, 0.5, 25, 32, 32)
    flags = [str(random_checkpoint), "--video", str(clip), "--out", str(tmp_path / "out")]
    line = error_line(evaluation.main, "eval.py", flags, as_process=case == "no sound")
    assert line.startswith(f"error: {clip}: ") and expected in line, line


def test_frames_need_a_sound_file(tmp_path, random_checkpoint):
    result = run_script("eval.py", str(random_checkpoint), "--frames", str(tmp_path))
    assert result.returncode == 2 and "--frames needs --audio SOUND" in result.stderr
    with pytest.raises(DataError, match="no PNG or JPEG frames"):
        evaluation.main([str(random_checkpoint), "--frames", str(tmp_path), "--audio", "x.wav", "--out", str(tmp_path / "o")])
