"""End to end on generated AVSBench data: train.py (PMR + WS-AVS), resume, eval.py on the checkpoint and on
saved predictions, and the one-line errors of both scripts."""
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import eval as evaluation
import train
from data import DataError, synthesize
from wsavs import PRESETS, SCALE_FIELDS, differences, preset_config

REPO = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "1", "--pmr-epochs", "1", "--batch-size", "6", "--img-size", "64", "--backbone", "resnet18",
        "--no-pretrained", "--dim", "32", "--decoder-dim", "16", "--audio-stem-stride", "4", "--workers", "0",
        "--lr", "1e-3", "--device", "cpu"]


@pytest.fixture(scope="module")
def root(tiny_root):
    return tiny_root


@pytest.fixture(scope="module")
def s4_run(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train.main(["--root", str(root), "--subset", "s4", "--out", str(out), *TINY])
    return out


def read_log(out):
    """The epoch records of log.jsonl (each run also writes a start record with its recipe)."""
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "epoch" in r]


def test_training_writes_everything(s4_run):
    out = s4_run
    assert len(list((out / "pseudo_masks").rglob("*.png"))) == 3 * 5      # 3 train videos x 5 frames
    log = read_log(out)
    assert [r["epoch"] for r in log] == [1]
    assert {"loss", "avf", "pmr", "val_miou", "val_fscore"} <= set(log[0])
    ckpt = evaluation.load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["config"]["dim"] == 32 and "optimizer" in ckpt
    metrics = json.loads((out / "eval-best-test" / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["frames"] == 5
    assert len(list((out / "eval-best-test" / "overlays" / "sample").glob("*.png"))) == 1


def test_run_records_its_preset_and_what_differs(s4_run):
    start = json.loads((s4_run / "log.jsonl").read_text().splitlines()[0])
    ckpt = evaluation.load_checkpoint(s4_run / "last.pt")
    for record in (start, ckpt):
        assert record["preset"] == "paper" and record["config"]["tau"] == 0.03
        assert record["differs"] == {"backbone": "resnet18", "pretrained": False, "audio_pretrained": False,
                                     "audio_stem_stride": 4, "dim": 32, "decoder_dim": 16, "img_size": 64,
                                     "pmr_epochs": 1, "epochs": 1, "batch_size": 6, "lr": 1e-3}


def test_resume_continues_and_reuses_pseudo_masks(s4_run, root, capsys):
    train.main(["--root", str(root), "--subset", "s4", "--out", str(s4_run), *TINY, "--epochs", "2", "--resume"])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("preset paper; differs from it: backbone=resnet18, pretrained=False")
    assert "epochs=2" in printed.splitlines()[0]
    assert "reusing pseudo masks" in printed and "resumed from" in printed
    assert [r["epoch"] for r in read_log(s4_run)] == [1, 2]
    assert evaluation.load_checkpoint(s4_run / "last.pt")["epoch"] == 2


def test_eval_checkpoint_and_saved_predictions_agree(s4_run, tmp_path):
    result = evaluation.main([str(s4_run / "last.pt"), "--out", str(tmp_path / "ev"), "--save-preds",
                              "--workers", "0", "--device", "cpu"])
    assert {"miou", "fscore", "fscore_by_video", "fscore_by_4_videos", "fscore_by_frame", "per_category"} <= set(result)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["miou"] == pytest.approx(result["miou"])
    root = evaluation.load_checkpoint(s4_run / "last.pt")["args"]["root"]
    # --save-preds writes AVSBench's own layout, {category}/{video}/{video}_{i}.png, no split folder
    official = tmp_path / "ev" / "preds"
    assert not (official / "test").exists() and len(list(official.glob("*/*/*_[1-5].png"))) == 5
    prefixed = tmp_path / "prefixed"
    shutil.copytree(official, prefixed / "test")
    scored = [evaluation.main(["--pred-dir", str(tree), "--root", root, "--subset", "s4", "--split", "test",
                               "--out", str(tmp_path / f"ev-{tree.name}"), "--overlays", "0", "--worst", "0"])
              for tree in (official, prefixed)]
    for key in ("miou", "fscore_by_video", "fscore_by_4_videos", "fscore_by_frame"):
        assert scored[0][key] == scored[1][key]
        assert scored[0][key] == pytest.approx(result[key], abs=0.02)    # the PNGs hold probabilities to 1/255
    assert len(list((tmp_path / "ev" / "overlays" / "worst").glob("*.png"))) == 1


def test_offscreen_pairs_are_scored_beside_the_true_ones(s4_run, tmp_path):
    """MS3's training split: 3 videos whose 15 frames all have masks (swapping needs a second video)."""
    result = evaluation.main([str(s4_run / "last.pt"), "--offscreen", "--subset", "ms3", "--split", "train",
                              "--out", str(tmp_path), "--workers", "0", "--device", "cpu", "--overlays", "0",
                              "--worst", "0"])
    offscreen = json.loads((tmp_path / "metrics.json").read_text())["offscreen"]
    assert (offscreen["pairs"], offscreen["sounding_pairs"]) == (45, 15)   # 15 frames x (own, swapped, silent)
    assert 0.0 <= offscreen["ap"] <= 1.0 and 0.0 <= offscreen["max_f1"] <= 1.0 and "miou" in result


def test_outputs_never_overwrite_other_results(s4_run, root, tmp_path):
    """A fresh run in a run's folder is refused; eval.py writes to a folder named after the checkpoint, says in
    metrics.json what it scored, and replaces only its own overlays; checkpoints hold absolute roots."""
    line = error_of(run_script("train.py", "--root", str(root), "--out", str(s4_run), *TINY))
    assert line == f"error: {s4_run}: holds a run already (last.pt); --resume continues it, --overwrite replaces it, " \
                   "or choose another --out"
    line = error_of(run_script("train.py", "--root", str(root), "--out", str(tmp_path / "new"), *TINY, "--seed", "5",
                               "--pseudo-masks", str(s4_run / "pseudo_masks")))
    assert line == f"error: {s4_run / 'pseudo_masks'}: holds the pseudo masks of another phase-1 recipe (seed 0 -> 5); " \
                   "--overwrite replaces them, or choose another --pseudo-masks"
    best = json.loads((s4_run / "eval-best-test" / "metrics.json").read_text())
    stale = s4_run / "eval-last-test" / "overlays" / "sample" / "old.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    result = run_script("eval.py", str(s4_run / "last.pt"), "--workers", "0", "--worst", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    last = json.loads((s4_run / "eval-last-test" / "metrics.json").read_text())
    ckpt = evaluation.load_checkpoint(s4_run / "last.pt")
    assert last["checkpoint"] == str(s4_run / "last.pt") and last["epoch"] == ckpt["epoch"]
    assert (last["split"], last["audio"], last["root"]) == ("test", "true", str(Path(ckpt["args"]["root"]) / "Single-source"))
    assert Path(ckpt["args"]["root"]).is_absolute() and best["checkpoint"] == str(s4_run / "best.pt")
    assert json.loads((s4_run / "eval-best-test" / "metrics.json").read_text()) == best
    assert not stale.exists() and len(last["per_video_iou"]) == 1
    assert [p.name[:4] for p in (s4_run / "eval-last-test" / "overlays" / "worst").iterdir()] == ["001_"]


def test_ms3_trains_and_evaluates(root, tmp_path):
    train.main(["--root", str(root / "Multi-sources"), "--subset", "ms3", "--out", str(tmp_path), *TINY])
    metrics = json.loads((tmp_path / "eval-best-test" / "metrics.json").read_text())
    assert metrics["frames"] == 5 and metrics["per_category"] == {}


def test_init_starts_from_another_runs_weights(s4_run, root, tmp_path):
    """MS3 from the S4 run's weights: with lr 0 the parameters stay exactly the S4 run's (BN buffers move)."""
    source = evaluation.load_checkpoint(s4_run / "last.pt")["model"]
    train.main(["--root", str(root / "Multi-sources"), "--subset", "ms3", "--out", str(tmp_path / "ms3"), *TINY,
                "--init", str(s4_run / "last.pt"), "--lr", "0"])
    model = evaluation.build_model("wsavs", train.parse_args(["--no-pretrained", *TINY]).cfg)
    names = {name for name, _ in model.named_parameters()}
    started = evaluation.load_checkpoint(tmp_path / "ms3" / "last.pt")["model"]
    assert all(torch.equal(started[name], source[name]) for name in names)
    line = error_of(run_script("train.py", "--root", str(root), "--out", str(tmp_path / "other"), *TINY,
                               "--dim", "16", "--init", str(s4_run / "last.pt")))
    assert line == (f"error: {s4_run / 'last.pt'}: --init needs a checkpoint of this method and architecture "
                    "(dim 32 -> 16)")


def run_script(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def error_line(main, script, flags, as_process):
    """A script's one error line: run as a process (error_of: exit code, no traceback), or, cheaper, `main(flags)`
    in this process, whose DataError carries the same line."""
    if as_process:
        return error_of(run_script(script, *flags))
    with pytest.raises(DataError) as caught:
        main(flags)
    return f"error: {caught.value}"


def error_of(result):
    """The script's error line: a non-zero exit, no traceback, and one line after any progress bar."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.replace("\r", "\n").strip().splitlines()
    assert lines[-1].startswith("error: "), result.stderr
    assert all("it/s" in line or "s/it" in line or not line.strip() for line in lines[:-1]), result.stderr
    return lines[-1]


@pytest.mark.parametrize("script,args,expected", [
    ("train.py", ["--root", "/nonexistent/AVSBench"], "/nonexistent/AVSBench"),
    ("eval.py", ["/nonexistent/ckpt.pt"], "no such checkpoint"),
])
def test_scripts_fail_with_one_line(script, args, expected):
    assert expected in error_of(run_script(script, *args))


def test_eval_rejects_bad_checkpoints(s4_run, tmp_path):
    not_a_ckpt = tmp_path / "notes.pt"
    not_a_ckpt.write_text("hello")
    assert error_of(run_script("eval.py", str(not_a_ckpt))).startswith(f"error: {not_a_ckpt}: not a readable checkpoint")
    ckpt = torch.load(s4_run / "last.pt", weights_only=True)
    ckpt["config"]["dim"] = 48                            # weights of a D = 32 model under a D = 48 config
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    assert "saved with another architecture" in error_of(run_script("eval.py", str(other)))


def test_pred_dir_missing_prediction(root, tmp_path):
    line = error_of(run_script("eval.py", "--pred-dir", str(tmp_path), "--root", str(root), "--subset", "s4"))
    assert "missing prediction" in line and str(tmp_path) in line


@pytest.mark.parametrize("method", ["avs-ws", "cam", "ezvsl", "c2am"])
def test_baselines_train_and_evaluate(root, tmp_path, method):
    train.main(["--root", str(root), "--subset", "s4", "--out", str(tmp_path), "--method", method, *TINY])
    ckpt = evaluation.load_checkpoint(tmp_path / "best.pt")
    assert ckpt["method"] == method
    metrics = json.loads((tmp_path / "eval-best-test" / "metrics.json").read_text())
    assert metrics["frames"] == 5 and 0.0 <= metrics["fg_area"] <= 1.0
    # the checkpoint rebuilds the same network in eval.py
    again = evaluation.main([str(tmp_path / "best.pt"), "--out", str(tmp_path / "ev"), "--workers", "0",
                             "--device", "cpu", "--overlays", "0", "--worst", "0"])
    assert again["miou"] == pytest.approx(metrics["miou"])


@pytest.mark.parametrize("flags,parts", [(["--no-avf"], {"pmr"}), (["--no-pmr"], {"avf", "avm"}),
                                         (["--fusion-stages", "2"], {"avf", "pmr"})])
def test_wsavs_ablation_flags(root, tmp_path, flags, parts):
    train.main(["--root", str(root), "--subset", "s4", "--out", str(tmp_path), *flags, *TINY])
    assert set(read_log(tmp_path)[0]) & {"avf", "pmr", "avm"} == parts
    assert (tmp_path / "pseudo_masks").is_dir() == ("--no-pmr" not in flags)


@pytest.mark.parametrize("args,message", [
    (["--method", "cam", "--subset", "ms3"], "needs the S4 category labels"),
    (["--method", "ezvsl", "--no-pmr"], "apply to --method wsavs only"),
])
def test_train_rejects_inconsistent_flags(args, message):
    result = run_script("train.py", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_audio_controls_on_a_checkpoint(s4_run, tmp_path):
    synthesize(tmp_path / "data", "s4", videos=12, seed=3, size=64)      # several categories per split
    common = ["--root", str(tmp_path / "data"), "--split", "train", "--workers", "0", "--device", "cpu",
              "--overlays", "0", "--worst", "0"]
    true = evaluation.main([str(s4_run / "last.pt"), *common, "--out", str(tmp_path / "true")])
    for mode in ("swap", "silent"):
        result = evaluation.main([str(s4_run / "last.pt"), *common, "--audio", mode, "--out", str(tmp_path / mode)])
        assert result["frames"] == true["frames"] and 0.0 <= result["non_empty"] <= 1.0
        assert result["fg_area"] != true["fg_area"]             # the untrained model's mask moves with the audio


def test_presets_and_flags():
    """train.py's default is the paper preset, --demo the small one; each recipe flag sets its Config field."""
    assert train.parse_args([]).cfg == PRESETS["paper"] and train.parse_args([]).preset == "paper"
    assert train.parse_args(["--demo"]).cfg == PRESETS["small"]
    args = train.parse_args(["--preset", "small", "--pseudo-gate", "none", "--equivariance", "0", "--no-channel-shuffle",
                             "--no-mask-same-video", "--tau", "0.03", "--avf-weight", "0.03", "--augment", "crop-flip",
                             "--c2am-self-pairs", "--cue-threshold", "0.3", "--projection-dropout", "0.9",
                             "--audio-norm"])
    assert differences(args.cfg, "small") == differences(replace(PRESETS["paper"], **{
        f: getattr(PRESETS["small"], f) for f in SCALE_FIELDS}), "small") | {"avf_weight": 0.03}
    assert train.parse_args(["--no-pretrained"]).cfg.audio_pretrained is False
    assert train.parse_args(["--no-pretrained", "--audio-pretrained"]).cfg.audio_pretrained is True
    semantic = train.parse_args(["--class-avf-weight", "0.5", "--class-evidence", "cam+sound"]).cfg
    assert (semantic.class_avf_weight, semantic.class_evidence) == (0.5, "cam+sound")


@pytest.mark.parametrize("field,value", [("class_evidence", "sound"), ("pseudo_gate", "pixels"), ("augment", "crop")])
def test_config_choices_are_checked(field, value):
    with pytest.raises(ValueError, match=f"{field} must be .*got '{value}'"):
        preset_config("paper", **{field: value})


def test_paper_preset_is_the_table_of_choices():
    """The `paper` column of the README's table of choices."""
    paper = PRESETS["paper"]
    assert (paper.backbone, paper.pretrained, paper.audio_pretrained, paper.audio_stem_stride) == ("resnet50", True, True, 2)
    assert (paper.audio_norm, paper.projection_dropout, paper.dim, paper.fusion_stages) == (True, 0.9, 512, 4)
    assert (paper.tau, paper.avf_weight, paper.mask_same_video) == (0.03, 1.0, False)
    assert (paper.pmr_epochs, paper.c2am_self_pairs, paper.equivariance, paper.channel_shuffle) == (10, True, 0.0, False)
    assert (paper.cue_threshold, paper.crf_iterations, paper.pseudo_gate, paper.augment) == (0.3, 10, "none", "crop-flip")
    assert (paper.img_size, paper.epochs, paper.batch_size, paper.lr) == (224, 20, 64, 1e-4)


@pytest.mark.parametrize("flags,message", [(["--fusion-stages", "5"], "invalid choice"),
                                           (["--pseudo-gate", "sometimes"], "invalid choice"),
                                           (["--augment", "rotate"], "invalid choice")])
def test_bad_recipe_flags_are_usage_errors(flags, message):
    result = run_script("train.py", *flags)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
