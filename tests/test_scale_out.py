"""Multi-process training (gathered M2ICL negatives), mixed precision, exact resume after kill -9, and the
one-line errors of train.py on bad input."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import eval as evaluation
import train
from data import SAMPLE_RATE, AVSBench, log_spectrogram, synthesize
from test_train_eval import TINY, error_of, run_script
from wsavs import (WSAVS, WSAVSS, PseudoMaskNet, c2am_step_loss, m2icl_loss, preset_config, wsavs_loss,
                   wsavss_loss)

REPO = Path(__file__).resolve().parent.parent


# the audio gate and the masking of same-video negatives both read every rank's batch
CFG = preset_config("small", dim=16, decoder_dim=8, img_size=64, tau=0.03)


def small_model(method):
    torch.manual_seed(0)
    model = WSAVSS(CFG, num_classes=4) if method == "wsavss" else WSAVS(CFG)
    return model.eval()          # BatchNorm on running statistics: per-process batches do not change it


def global_batch():
    g = torch.Generator().manual_seed(1)
    images, audio = torch.randn(6, 3, 64, 64, generator=g), torch.randn(6, 1, 257, 300, generator=g)
    pseudo = (torch.rand(6, 1, 64, 64, generator=g) > 0.5).float()
    video_ids = torch.tensor([0, 1, 2, 3, 0, 2])      # frames of videos 0 and 2 on both ranks: masked across ranks
    labels = torch.tensor([[0.0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    return images, audio, pseudo, video_ids, labels   # labels: AVSS's multi-hot, one or two classes a video


def loss_and_grads(method, model, shard, gather):
    images, audio, pseudo, video_ids, labels = (x[shard] for x in global_batch())
    if method == "wsavss":         # semantic: M2ICL per class gathers queries and labels too
        loss, _ = wsavss_loss(model(images, audio), pseudo, labels, video_ids, CFG, gather=gather)
    else:
        loss, _ = wsavs_loss(model(images, audio), pseudo, video_ids, CFG, gather=gather)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def rank_worker(rank, world, init_file, result_file, method):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = DistributedDataParallel(small_model(method))
    loss, grads = loss_and_grads(method, model, slice(3 * rank, 3 * rank + 3), train.gather_across_ranks)
    dist.all_reduce(loss)
    if rank == 0:                      # DDP has averaged the gradients over ranks
        torch.save({"loss": loss / world, "grads": {k.removeprefix("module."): v for k, v in grads.items()}},
                   result_file)
    dist.destroy_process_group()


@pytest.mark.parametrize("method", ["wsavs", "wsavss"])
def test_two_processes_equal_one_with_the_global_batch(tmp_path, method):
    mp.spawn(rank_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "result.pt"), method), nprocs=2)
    result = torch.load(tmp_path / "result.pt", weights_only=True)
    loss, grads = loss_and_grads(method, small_model(method), slice(0, 6), None)
    torch.testing.assert_close(result["loss"], loss, rtol=1e-5, atol=1e-6)
    assert set(result["grads"]) == set(grads)
    for name, grad in grads.items():
        # float32 sums in another order: equal to 1e-4 of the tensor's largest gradient
        torch.testing.assert_close(result["grads"][name], grad, rtol=1e-3, atol=1e-4 * grad.abs().max().item(),
                                   msg=name)


def traffic_worker(rank, world, init_file, result_file):
    """Bytes this rank hands to all_gather / all_reduce for M2ICL's forward and backward at two map sizes."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    sent = []
    for name in ("all_gather", "all_reduce"):
        collective = getattr(dist, name)

        def counted(*args, collective=collective, name=name, **kw):
            tensor = args[1] if name == "all_gather" else args[0]           # (outputs, input) / (tensor)
            sent[-1] += tensor.numel() * tensor.element_size()
            return collective(*args, **kw)
        setattr(dist, name, counted)
    for size in (8, 16):                                          # stage maps from size x size down to size/8
        sent.append(0)
        g = torch.Generator().manual_seed(rank)
        audio = torch.randn(3, 16, generator=g, requires_grad=True)
        maps = [torch.randn(3, 16, size >> k, size >> k, generator=g, requires_grad=True) for k in range(4)]
        loss = m2icl_loss(audio, maps, torch.arange(3) + 3 * rank, 0.1, train.gather_across_ranks)
        loss.backward()
    if rank == 0:
        torch.save(sent, result_file)
    dist.destroy_process_group()


def test_m2icl_traffic_does_not_grow_with_the_maps(tmp_path):
    """Only audio embeddings and (N B)^2 scores cross processes: the same bytes for maps 4x the area."""
    mp.spawn(traffic_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "sent.pt")), nprocs=2)
    small, large = torch.load(tmp_path / "sent.pt", weights_only=True)
    nb, d, stages = 6, 16, 4
    assert small == large
    # forward: this rank's video ids (3 int64), audio (3 x D) and, per stage, its (3, N B) block of scores;
    # backward: the gradients of the gathered audio (N B x D) and of each stage's (N B, N B) scores (float32)
    assert small == 8 * 3 + 4 * (3 * d + stages * 3 * nb) + 4 * (nb * d + stages * nb * nb)


PLAIN_C2AM = preset_config("small", dim=16, decoder_dim=8, img_size=64, equivariance=0.0, channel_shuffle=False,
                           c2am_self_pairs=True)        # CCAM's loss: no random warps or channel orders


def c2am_loss_and_grads(shard, gather, world=1):
    torch.manual_seed(0)
    net = PseudoMaskNet(PLAIN_C2AM).eval()                # BatchNorm on running statistics, as above
    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))[shard]
    loss, _ = c2am_step_loss(net, images, gather)
    loss.backward()
    train.average_gradients(list(net.parameters()), world)
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def c2am_rank_worker(rank, world, init_file, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    loss, grads = c2am_loss_and_grads(slice(3 * rank, 3 * rank + 3), train.gather_across_ranks, world)
    if rank == 0:
        torch.save({"loss": loss, "grads": grads}, result_file)
    dist.destroy_process_group()


def test_c2am_on_two_processes_equals_one_with_the_global_batch(tmp_path):
    """Phase 1 on every process: C2AM contrasts every rank's pooled foreground/background vectors."""
    mp.spawn(c2am_rank_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "result.pt")), nprocs=2)
    result = torch.load(tmp_path / "result.pt", weights_only=True)
    loss, grads = c2am_loss_and_grads(slice(0, 6), None)
    local, _ = c2am_loss_and_grads(slice(0, 3), None)
    assert not torch.allclose(local, loss, rtol=1e-3)        # the global contrast differs from a local one
    torch.testing.assert_close(result["loss"], loss, rtol=1e-5, atol=1e-6)
    assert set(result["grads"]) == set(grads) and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(result["grads"][name], grad, rtol=1e-3, atol=1e-4 * grad.abs().max().item(),
                                   msg=name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("avsbench")
    synthesize(root, "s4", videos=5, seed=1, size=64)
    return root


def train_args(root, out, *extra):
    return ["train.py", "--root", str(root), "--subset", "s4", "--out", str(out), *TINY, *extra]


def test_torchrun_two_cpu_processes(root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             *train_args(root, tmp_path, "--batch-size", "3")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2      # rank 0 alone logs: start, epoch 1
    ckpt = evaluation.load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["config"]["batch_size"] == 3
    assert len(list((tmp_path / "pseudo_masks").glob("**/*.png"))) == 15


def final_state(out):
    ckpt = torch.load(out / "last.pt", weights_only=True)
    return ckpt["model"], ckpt["optimizer"]["state"]


def test_kill_9_then_resume_equals_an_uninterrupted_run(root, tmp_path):
    # one phase 1 for both runs: phase 2 starts from the same weights whether phase 1 ran or was reused
    flags = ["--epochs", "2", "--save-every", "1", "--batch-size", "3", "--pseudo-masks", str(tmp_path / "pmr")]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run([sys.executable, *train_args(root, whole, *flags)], cwd=REPO, check=True, capture_output=True)

    process = subprocess.Popen([sys.executable, *train_args(root, cut, *flags)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (cut / "last.pt").exists() and process.poll() is None:   # wait for the first step's checkpoint
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = torch.load(cut / "last.pt", weights_only=True)
    assert (interrupted["epoch"], interrupted["step"]) == (0, 1)      # killed in the middle of epoch 1
    resumed = subprocess.run([sys.executable, *train_args(root, cut, *flags, "--resume")], cwd=REPO,
                             capture_output=True, text=True)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-3000:]

    (model_a, adam_a), (model_b, adam_b) = final_state(whole), final_state(cut)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    assert all(torch.equal(adam_a[i][k], adam_b[i][k]) for i in adam_a for k in adam_a[i])
    # log.jsonl is rewritten from last.pt: one line per epoch, after each run's start line; best.pt has no
    # optimizer state
    epochs = [json.loads(line).get("epoch") for line in (cut / "log.jsonl").read_text().splitlines()]
    assert epochs == [None, None, 1, 2]
    assert "optimizer" not in torch.load(cut / "best.pt", weights_only=True)


def test_bf16_autocast_trains(root, tmp_path):
    train.main(train_args(root, tmp_path, "--amp", "bf16", "--method", "ezvsl")[1:])
    log = (tmp_path / "log.jsonl").read_text()
    assert "NaN" not in log and evaluation.load_checkpoint(tmp_path / "last.pt")["args"]["amp"] == "bf16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed on CUDA")
def test_fp16_needs_cuda(root, tmp_path):
    result = run_script(*train_args(root, tmp_path, "--amp", "fp16"))
    assert result.returncode == 2 and "--amp fp16 needs CUDA" in result.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(root, tmp_path):
    line = error_of(run_script(*train_args(root, tmp_path, "--method", "ezvsl", "--lr", "1e30", "--save-every", "1",
                                           "--batch-size", "3")))
    assert "non-finite ezvsl loss at step" in line
    step = int(line.split("at step ")[1].split(";")[0])
    kept = evaluation.load_checkpoint(tmp_path / "last.pt")
    assert step >= 1 and kept["step"] == step                # written after the last finite step
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_resume_restores_a_best_pt_lost_to_a_kill(root, tmp_path):
    """A kill between writing last.pt and best.pt: --resume writes best.pt from last.pt (epoch 1 was the best)."""
    subprocess.run([sys.executable, *train_args(root, tmp_path)], cwd=REPO, check=True, capture_output=True)
    (tmp_path / "best.pt").unlink()
    (tmp_path / "log.jsonl").write_text("")
    subprocess.run([sys.executable, *train_args(root, tmp_path, "--resume")], cwd=REPO, check=True, capture_output=True)
    best = evaluation.load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 1 and "optimizer" not in best
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line).get("epoch") for line in log] == [None, 1, None]


def test_resume_with_other_flags_is_refused(root, tmp_path):
    subprocess.run([sys.executable, *train_args(root, tmp_path, "--method", "ezvsl")], cwd=REPO, check=True,
                   capture_output=True)
    result = run_script(*train_args(root, tmp_path, "--method", "ezvsl", "--dim", "48", "--lr", "0.01", "--seed", "3",
                                    "--resume"))
    assert error_of(result) == (f"error: {tmp_path / 'last.pt'}: --resume with other settings than the run's (dim 32 "
                                "-> 48, lr 0.001 -> 0.01, seed 0 -> 3); only --epochs may change: use the run's "
                                "flags, or another --out")
    assert "PMR" not in result.stdout and "checking" not in result.stderr              # refused before any work


def test_silent_audio_gives_finite_everything():
    model = small_model("wsavs").train()
    silence = log_spectrogram(np.zeros(5 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE, centre_s=2.5)
    images, _, pseudo, video_ids, _ = global_batch()
    out = model(images, silence.expand(6, -1, -1, -1))
    loss, _ = wsavs_loss(out, pseudo, video_ids, CFG)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in out.values() if torch.is_tensor(v))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def broken_copy(root, tmp_path):
    copy = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(root), str(copy)], check=True)
    return copy


@pytest.mark.parametrize("damage,expected", [
    ("truncate_wav", "truncated"),
    ("corrupt_png", "corrupt"),
    ("missing_frame", "missing file"),
    ("missing_test_mask", "missing file"),
    ("wrong_columns", "header is"),
    ("empty_split", "no videos in split"),
])
def test_train_on_bad_data_stops_with_one_line(root, tmp_path, damage, expected):
    copy = broken_copy(root, tmp_path)
    subset = copy / "Single-source"
    frames = sorted((subset / "s4_data" / "visual_frames" / "train").rglob("*.png"))
    path = {"truncate_wav": sorted((subset / "s4_data" / "audio_wav" / "train").rglob("*.wav"))[0],
            "corrupt_png": frames[0], "missing_frame": frames[3],
            "missing_test_mask": sorted((subset / "s4_data" / "gt_masks" / "test").rglob("*.png"))[2],
            "wrong_columns": subset / "s4_meta_data.csv", "empty_split": subset / "s4_meta_data.csv"}[damage]
    if damage == "truncate_wav":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "corrupt_png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    elif damage.startswith("missing"):
        path.unlink()
    elif damage == "wrong_columns":
        path.write_text("video,when,what,fold\n" + "\n".join(path.read_text().splitlines()[1:]) + "\n")
    else:
        rows = path.read_text().splitlines()
        path.write_text("\n".join([rows[0]] + [r for r in rows[1:] if not r.endswith(",val")]) + "\n")
    line = error_of(run_script(*train_args(copy, tmp_path / "out")))
    assert expected in line and (str(path) in line or damage in ("wrong_columns", "empty_split")), line


def test_wavs_of_any_rate_channels_and_length_train(root, tmp_path):
    copy = broken_copy(root, tmp_path)
    wavs = sorted((copy / "Single-source" / "s4_data" / "audio_wav").rglob("*.wav"))
    # (rate, channels, seconds, amplitude): every video's WAV is of another kind; the last is all zeros
    kinds = [(8000, 1, 5.0, 0.5), (22050, 2, 0.7, 0.5), (44100, 1, 12.0, 0.5), (48000, 2, 5.0, 0.5), (16000, 1, 5.0, 0.0)]
    for wav, (rate, channels, seconds, amplitude) in zip(wavs, kinds):
        tone = (amplitude * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
        soundfile.write(wav, np.stack([tone] * channels, axis=1) if channels == 2 else tone, rate)
    train.main(train_args(copy, tmp_path / "out")[1:])
    log = (tmp_path / "out" / "log.jsonl").read_text()
    assert "NaN" not in log and evaluation.load_checkpoint(tmp_path / "out" / "last.pt")["epoch"] == 1


def test_an_error_on_one_process_stops_every_process_at_once(root, tmp_path):
    """Two processes (as torchrun starts them); the data check is shared out, so only rank 1 opens the corrupt
    frame. Both stop with rank 1's line and exit 1, long before any collective's timeout."""
    copy = broken_copy(root, tmp_path)
    corrupt = AVSBench(copy, "s4", "train").items[1].image_path          # rank 1 checks items 1, 3, 5, ...
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": "2"}
    started = time.time()
    processes = [subprocess.Popen([sys.executable, *train_args(copy, tmp_path / "out")], cwd=REPO,
                                  env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, text=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for rank in (0, 1)]
    lines = [error_of(subprocess.CompletedProcess(p.args, p.wait(timeout=120), "", p.stderr.read()))
             for p in processes]
    assert time.time() - started < 60
    assert [p.returncode for p in processes] == [1, 1]
    assert lines[0] == lines[1] == f"error: {corrupt}: corrupt or truncated image (OSError: Truncated File Read)", lines
