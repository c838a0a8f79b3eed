"""The README's clip pictures: one synthetic test video of a --root written as an mp4 (each 1-fps frame held for
a second at 25 fps, its WAV as AAC), then `python eval.py CKPT --video` on it.

    python bench/demo_clip.py runs/demo/best.pt --root data/demo-avsbench --out assets/clip
"""
import argparse
import subprocess
import sys
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from data import SAMPLE_RATE, AVSBench, mono_16k, read_frame, read_wav  # noqa: E402


def write_clip(dataset, video, path, rate=25):
    """The video's 5 frames, each held 1 s at `rate` fps, with its sound (mono 16 kHz AAC)."""
    indices = dataset.indices_of(video)
    wave = mono_16k(*read_wav(dataset.items[indices[0]].wav_path))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "18"})
        first = np.asarray(read_frame(dataset.image_path(indices[0])))
        stream.width, stream.height, stream.pix_fmt = first.shape[1] // 2 * 2, first.shape[0] // 2 * 2, "yuv420p"
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for index in indices:
            frame = np.asarray(read_frame(dataset.image_path(index)))[:stream.height, :stream.width]
            for _ in range(rate):
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(stream.encode())
        for start in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--root", required=True, help="the AVSBench root whose test video is used")
    p.add_argument("--subset", default="s4", choices=["s4", "ms3"])
    p.add_argument("--video", type=int, default=0, help="which test video (its position in the split)")
    p.add_argument("--out", required=True, help="folder for clip.mp4 and eval.py's outputs")
    args = p.parse_args()
    dataset = AVSBench(args.root, args.subset, "test")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_clip(dataset, dataset.videos[args.video], out / "clip.mp4")
    subprocess.run([sys.executable, str(REPO / "eval.py"), args.checkpoint, "--video", str(out / "clip.mp4"),
                    "--out", str(out), "--sheet", "5"], check=True)


if __name__ == "__main__":
    main()
