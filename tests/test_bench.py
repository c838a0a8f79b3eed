"""bench/run.py: the one command for the paper's tables on a real AVSBench root (here a tiny generated one at
tiny sizes), and the rows it derives from the presets."""
import argparse
import json
import sys
from pathlib import Path

import pytest

from data import synthesize
from test_train_eval import TINY
from wsavs import PRESETS, SCALE_FIELDS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import run as bench                                               # noqa: E402


def test_rows_derived_from_the_presets():
    small, paper = PRESETS["small"], PRESETS["paper"]
    flags = bench.scale_flags("paper")                  # the paper recipe at the small preset's scale
    assert flags[:2] == ["--backbone", "resnet18"] and "--no-pretrained" in flags and bench.scale_flags("small") == []
    additions = bench.addition_rows()                   # one row per recipe field where small differs from paper
    assert len(additions) == len([f for f in ("audio_norm", "projection_dropout", "tau", "mask_same_video",
                                              "c2am_self_pairs", "equivariance", "channel_shuffle", "cue_threshold",
                                              "pseudo_gate", "augment") if getattr(small, f) != getattr(paper, f)])
    assert additions["small, pseudo_gate = none (paper)"] == ["--pseudo-gate", "none"]
    assert additions["small, channel_shuffle = False (paper)"] == ["--no-channel-shuffle"]
    assert not set(SCALE_FIELDS) & {name.split(",")[1].split("=")[0].strip() for name in additions}


def test_mean_sd():
    assert bench.mean_sd([0.5]) == "50.00"
    assert bench.mean_sd([0.3, 0.4, 0.5]) == "40.00 ± 10.00"


def test_real_root_gives_table1_table2_figure3(tmp_path):
    """`python bench/run.py --root AVSBench --preset paper`, at tiny sizes: every row trains, is evaluated three
    ways, and lands in the tables; rows with the same recipe share one run and one phase 1."""
    root = tmp_path / "AVSBench"
    synthesize(root, "s4", videos=12, seed=3, size=64)      # two categories per split
    extra = " ".join(f for f in TINY if f not in ("--workers", "0", "--device", "cpu")) + " --crf-iterations 0"
    bench.main(["--root", str(root), "--subsets", "s4", "--runs", str(tmp_path / "runs"), "--device", "cpu",
                "--workers", "0", "--results", str(tmp_path / "results"), "--assets", str(tmp_path / "assets"),
                "--extra", extra, "--tables", "table1", "table2", "figure3"])
    results = json.loads((tmp_path / "results" / "results.json").read_text())["s4"]
    assert list(results["table1"]) == ["all foreground", "centre prior", "AVS (ws)", "CAM", "EZ-VSL", "C2AM", "WS-AVS"]
    assert list(results["table2"]) == list(bench.TABLE2) and list(results["figure3"]) == list(bench.FIGURE3)
    ws_avs = results["table1"]["WS-AVS"][0]
    assert "--preset paper" in ws_avs["command"] and {"true", "swap", "silent"} <= set(ws_avs)
    assert ws_avs["out"] == results["table2"]["AVF + PMR (= WS-AVS)"][0]["out"]
    assert results["figure3"]["fusion stages 4"][0]["out"] == ws_avs["out"]
    assert results["table1"]["C2AM"][0]["pseudo_masks"] == ws_avs["pseudo_masks"]      # one shared phase 1
    assert results["figure3"]["batch 8"][0]["pseudo_masks"] != ws_avs["pseudo_masks"]  # batch is phase 1's too
    markdown = (tmp_path / "results" / "results.md").read_text()
    assert "## S4: figure3" in markdown and "| WS-AVS | 1 |" in markdown
    assert (tmp_path / "assets" / "figure2_s4.png").is_file() and (tmp_path / "assets" / "figure4_s4.png").is_file()


def test_cam_has_no_ms3_row(tmp_path):
    args = argparse.Namespace(runs=str(tmp_path), workers=0, device="cpu", extra="")
    assert bench.Bench(args).run_row("CAM", ["--preset", "small", *bench.TABLE1["CAM"]], tmp_path, "synthetic", "ms3", 0) is None
    assert not any(tmp_path.iterdir())


def test_synthetic_only_tables_need_synthetic_data():
    with pytest.raises(SystemExit):
        bench.main(["--root", "AVSBench", "--tables", "hard"])


def test_speed_benchmark_measures_every_row(tmp_path):
    import speed
    rows = speed.main(["--preset", "small", "--batch-size", "4", "--img-size", "64", "--workers", "0", "1",
                       "--steps", "1", "--warmup", "0", "--videos", "6", "--device", "cpu",
                       "--json", str(tmp_path / "speed.json")])
    assert [r["row"] for r in rows] == ["loader, 0 workers", "loader, 1 workers", "phase 1a C2AM", "phase 1b saliency",
                                        "phase 2 WS-AVS", "loader (0 workers) + phase 2"]
    assert all(r["frames_per_s"] > 0 and r["step_ms"] > 0 for r in rows)
    setting = json.loads((tmp_path / "speed.json").read_text())["setting"]
    assert (setting["batch_size"], setting["img_size"], setting["backbone"]) == (4, 64, "resnet18")
