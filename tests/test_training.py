"""Data loading, the min-max training loop, exact resume, DDP on gloo, and evaluation."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from baryir.checkpoints import load_model, read_safetensors
from baryir.cli import main
from baryir.data.datasets import AllInOneDataset
from baryir.train import Trainer, TrainingStopped, TrainOptions, WeightEMA, _StopRequest

TASKS = ["denoise_15", "denoise_25", "derain", "dehaze"]


def _opts(photo_dir, out, **kw) -> TrainOptions:
    base = dict(
        data=[str(photo_dir)],
        out=str(out),
        tasks=TASKS,
        config="nano",
        steps=4,
        batch_size=4,
        patch_size=32,
        lr=1e-3,
        warmup=1,
        schedule="constant",
        workers=0,
        ckpt_every=2,
        val_every=100,
        progress=False,
    )
    base.update(kw)
    return TrainOptions(**base)


def test_dataset_skips_bad_files_and_weights_sources(photo_dir, caplog):
    data = AllInOneDataset([photo_dir], TASKS, patch_size=32, seed=1)
    assert "broken.png" in caplog.text
    assert len(data.entries) == 4 * len(TASKS)
    assert data.sources == ["denoise", "derain", "dehaze"]
    # inverse source frequency, normalised: denoise has twice the samples of the others
    torch.testing.assert_close(data.lambdas, torch.tensor([0.2, 0.4, 0.4]))
    a, b = data[5], data[5]
    assert torch.equal(a[0], b[0]) and a[0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="multiple of 8"):  # the network needs it; refused before any photo is read
        AllInOneDataset([photo_dir], TASKS, patch_size=36)


def test_content_haze_keeps_the_scene_hazy_in_input_and_target(photo_dir):
    plain = AllInOneDataset([photo_dir], TASKS, patch_size=32, seed=1)
    hazy = AllInOneDataset([photo_dir], TASKS, patch_size=32, seed=1, content_haze=1.0)
    changed = 0
    for k in range(24):
        (_, clean_a, task, _), (_, clean_b, task_b, _) = plain[k], hazy[k]
        assert task == task_b  # same image and task stream, only the scene differs
        if TASKS[task] == "dehaze":
            assert torch.equal(clean_a, clean_b)  # haze targets stay haze-free
        else:
            changed += not torch.equal(clean_a, clean_b)
            assert clean_b.mean() > clean_a.mean()  # airlight brightens the target itself
    assert changed > 0


def test_content_sky_puts_clouds_in_input_and_target_of_every_task(photo_dir):
    plain = AllInOneDataset([photo_dir], TASKS + ["identity"], patch_size=32, seed=3)
    skies = AllInOneDataset([photo_dir], TASKS + ["identity"], patch_size=32, seed=3, content_sky=1.0)
    changed = set()
    for k in range(40):
        (_, clean_a, task, _), (degraded_b, clean_b, task_b, _) = plain[k], skies[k]
        assert task == task_b  # same image and task stream, only the scene differs
        assert clean_b.min() >= 0 and clean_b.max() <= 1
        if not torch.equal(clean_a, clean_b):
            changed.add(skies.tasks[task].name)
        if skies.tasks[task].name == "identity":
            assert torch.equal(degraded_b, clean_b)  # the sky is content: the target keeps it
    assert "dehaze" in changed and "identity" in changed  # haze samples get skies too


def test_add_sky_fills_the_frame_a_horizon_or_the_bright_regions():
    from baryir.data.degradations import add_sky

    photo = torch.rand(3, 48, 64) * 0.3  # dark and saturated: no sky-like region of its own
    kinds = set()
    for seed in range(30):
        out = add_sky(photo, torch.Generator().manual_seed(seed))
        same = (out - photo).abs().amax(0) < 1e-6
        kinds.add("none" if same.all() else "frame" if not same.any() else "part")
        assert out.shape == photo.shape and 0 <= out.min() and out.max() <= 1
    assert {"frame", "part", "none"} <= kinds  # the bright-region kind leaves a dark photo alone


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        AllInOneDataset([tmp_path / "empty"], TASKS, patch_size=32)


def test_training_loss_is_finite_and_decreases(photo_dir, tmp_path):
    trainer = Trainer(_opts(photo_dir, tmp_path / "run", steps=40, batch_size=4, lr=2e-3))
    losses = []
    loader = torch.utils.data.DataLoader(trainer.data, batch_size=4, sampler=range(4))
    batch = next(iter(loader))  # one fixed batch: the loss must go down on it
    for _ in range(40):
        logs = trainer.train_step(*batch)
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
        losses.append(logs["l1"])
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    assert {"latent_rmse", "orthogonality", "contrastive", "pots", "bary"} <= set(logs)


def test_keep_every_keeps_the_weights_of_those_steps(photo_dir, tmp_path):
    trainer = Trainer(_opts(photo_dir, tmp_path / "run", steps=4, ckpt_every=4, keep_every=2, ema=0.9))
    trainer.fit()
    snaps = tmp_path / "run" / "snapshots"
    assert sorted(p.name for p in snaps.iterdir()) == [
        f"step{s:06d}-{n}.safetensors" for s in (2, 4) for n in ("model", "model_ema")
    ]
    # the last snapshot is the run's final weights; the one of step 2 differs from them
    last = read_safetensors(snaps / "step000004-model.safetensors")[0]
    final = read_safetensors(tmp_path / "run" / "model.safetensors")[0]
    early = read_safetensors(snaps / "step000002-model.safetensors")[0]
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert any(not torch.equal(early[k], final[k]) for k in final)
    # a later run without EMA in that folder snapshots its weights only: the first run's final EMA
    # file, still there, is never copied in as the EMA of its steps
    ema_step2 = read_safetensors(snaps / "step000002-model_ema.safetensors")[0]
    Trainer(_opts(photo_dir, tmp_path / "run", steps=2, ckpt_every=2, keep_every=2)).fit()
    again = read_safetensors(snaps / "step000002-model_ema.safetensors")[0]
    assert all(torch.equal(again[k], ema_step2[k]) for k in ema_step2)


def test_resume_continues_exactly(photo_dir, tmp_path):
    straight = Trainer(_opts(photo_dir, tmp_path / "a", steps=4))
    straight.fit()
    first = Trainer(_opts(photo_dir, tmp_path / "b", steps=2))
    first.fit()
    resumed = Trainer(_opts(photo_dir, tmp_path / "b", steps=4, resume=True))
    assert resumed.step == 2
    resumed.fit()
    for (name, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
    for p, q in zip(straight.pots.state_dict().values(), resumed.pots.state_dict().values()):
        assert torch.equal(p, q)
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    assert load_model(tmp_path / "b" / "model.safetensors").config.dim == 8


def _train_command(photo_dir, out, steps: int, *extra: str) -> list[str]:
    """``baryir train`` with :func:`_opts`' settings on a constant learning rate (so a run's
    steps do not depend on ``--steps``), one data-loader worker."""
    cli = "import sys; from baryir.cli import main; sys.exit(main())"
    return [sys.executable, "-c", cli, "train", "--data", str(photo_dir), "--tasks", *TASKS, "--config", "nano"] + [
        *("--steps", str(steps), "--batch-size", "4", "--patch-size", "32", "--lr", "1e-3", "--warmup", "1"),
        *("--schedule", "constant", "--workers", "1", "--ckpt-every", "100000", "--val-every", "100000"),
        *("--device", "cpu", "--no-progress", "-o", str(out), *extra),
    ]


@pytest.mark.slow
def test_sigterm_saves_and_resume_matches_an_uninterrupted_run(photo_dir, tmp_path):
    """SIGTERM to the whole process group, data-loader worker included (as ``timeout`` and batch
    schedulers send it), ends the run after the step in progress with everything saved, although
    no checkpoint was due; ``--resume`` then ends exactly where a run never stopped ends."""
    out = tmp_path / "stopped"
    proc = subprocess.Popen(
        _train_command(photo_dir, out, 100_000), start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    csv_path, deadline = out / "metrics.csv", time.monotonic() + 180
    while not (csv_path.exists() and len(csv_path.read_text().splitlines()) > 3):
        assert proc.poll() is None, f"training exited early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no 3 training steps within 180 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    stopped_at = int(read_safetensors(out / "model.safetensors")[1]["baryir.step"])
    assert f"SIGTERM at step {stopped_at} of 100000" in err and "--resume" in err
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 1 + stopped_at and rows[-1].startswith(f"{stopped_at},")
    assert json.loads((out / "metrics.json").read_text())["stopped_by"] == "SIGTERM"

    subprocess.run(_train_command(photo_dir, out, stopped_at + 2, "--resume"), check=True, capture_output=True)
    subprocess.run(_train_command(photo_dir, tmp_path / "straight", stopped_at + 2), check=True, capture_output=True)
    resumed = read_safetensors(out / "model.safetensors")[0]
    straight = read_safetensors(tmp_path / "straight" / "model.safetensors")[0]
    for name, p in straight.items():
        assert torch.equal(p, resumed[name]), name


def _signal_main_thread(signum: int) -> None:
    """Deliver ``signum`` to this process's main thread (``os.kill`` lets the kernel pick any thread)."""
    signal.pthread_kill(threading.main_thread().ident, signum)


@pytest.fixture
def own_process(request) -> bool:
    """True in the test's own fresh interpreter; elsewhere it reruns the test there, asserts it
    passed, and is False (the test then returns). Signal tests run in-process training: once
    other tests had loaded OpenVINO and ONNX Runtime into the same process, a SIGTERM during
    training crashed it (exit 139; not reproduced in a process without them)."""
    if os.environ.get("BARYIR_OWN_PROCESS") == request.node.nodeid:
        return True
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
        cwd=request.config.rootpath,
        env={**os.environ, "BARYIR_OWN_PROCESS": request.node.nodeid},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]
    return False


class _SignalledTrainer(Trainer):
    """Sends itself SIGTERM during step ``signal_at`` (in process, as the test is the main thread)."""

    signal_at = 0

    def train_step(self, *batch):
        if self.step + 1 == self.signal_at:
            _signal_main_thread(signal.SIGTERM)
        return super().train_step(*batch)


def test_a_signal_during_the_last_step_completes_the_run(own_process, photo_dir, tmp_path):
    if not own_process:
        return
    stopped = _SignalledTrainer(_opts(photo_dir, tmp_path / "a", steps=3, ckpt_every=100))
    stopped.signal_at = 2
    with pytest.raises(TrainingStopped, match="SIGTERM at step 2 of 3"):
        stopped.fit()
    finished = _SignalledTrainer(_opts(photo_dir, tmp_path / "b", steps=3, ckpt_every=100))
    finished.signal_at = 3
    assert finished.fit()["stopped_by"] is None
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["steps"] == 3


def test_a_second_signal_aborts_and_handlers_are_restored(own_process):
    if not own_process:
        return
    before = signal.getsignal(signal.SIGTERM)
    with _StopRequest() as stop:
        _signal_main_thread(signal.SIGTERM)
        assert stop.agreed(1, torch.device("cpu")) == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            _signal_main_thread(signal.SIGINT)
            time.sleep(1)  # the handler runs in the main thread between bytecodes
    assert signal.getsignal(signal.SIGTERM) is before


def test_weight_ema_update_rule():
    net = torch.nn.BatchNorm1d(2)
    ema = WeightEMA(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(2.0)  # was 1
    net.num_batches_tracked.fill_(5)
    ema.update(net)
    torch.testing.assert_close(ema.model.weight, torch.full((2,), 1.1))  # 0.9 * 1 + 0.1 * 2
    assert ema.model.num_batches_tracked.item() == 5  # integer buffers are copied, not averaged
    with pytest.raises(ValueError, match="decay in"):
        WeightEMA(net, decay=1.0)


def test_ema_weights_are_saved_and_resume_exactly(photo_dir, tmp_path):
    straight = Trainer(_opts(photo_dir, tmp_path / "a", steps=4, ema=0.5))
    straight.fit()
    first = Trainer(_opts(photo_dir, tmp_path / "b", steps=2, ema=0.5))
    first.fit()
    resumed = Trainer(_opts(photo_dir, tmp_path / "b", steps=4, ema=0.5, resume=True))
    resumed.fit()
    saved = load_model(tmp_path / "b" / "model_ema.safetensors").state_dict()
    for (name, p), q, r in zip(
        straight.ema.model.state_dict().items(), resumed.ema.model.state_dict().values(), saved.values()
    ):
        assert torch.equal(p, q) and torch.equal(p, r), name
    trained = straight.model.state_dict()
    assert any(not torch.equal(p, trained[k]) for k, p in saved.items())  # an average, not a copy
    Trainer(_opts(photo_dir, tmp_path / "plain", steps=2)).fit()
    assert "val_psnr_ema" in (tmp_path / "b" / "metrics.csv").read_text().splitlines()[0]
    assert "val_psnr_ema" not in (tmp_path / "plain" / "metrics.csv").read_text().splitlines()[0]
    with pytest.raises(FileNotFoundError, match="started without --ema"):
        Trainer(_opts(photo_dir, tmp_path / "plain", steps=4, ema=0.5, resume=True))


def test_l1_ablation_trains_without_potentials(photo_dir, tmp_path):
    trainer = Trainer(_opts(photo_dir, tmp_path / "l1", loss="l1", steps=2))
    before = [p.clone() for p in trainer.pots.parameters()]
    trainer.fit()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.pots.parameters()))


def _ddp_worker(rank: int, world: int, port: int, photo_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    trainer = Trainer(_opts(photo_dir, out, steps=3, device="cpu"))
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in list(trainer.model.parameters()) + list(trainer.pots.parameters())])
    torch.save(flat, os.path.join(out, f"params_rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_on_gloo_keeps_ranks_in_sync(photo_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, port, str(photo_dir), str(out)), nprocs=2, join=True)
    p0 = torch.load(out / "params_rank0.pt")
    p1 = torch.load(out / "params_rank1.pt")
    torch.testing.assert_close(p0, p1, atol=0, rtol=0)
    torch.manual_seed(0)
    from baryir import build_model

    initial = torch.cat([p.detach().flatten() for p in build_model("nano").parameters()])
    assert not torch.equal(p0[: initial.numel()], initial)  # they trained, in step
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2


def test_eval_cli_on_pairs_and_synthetic(photo_dir, tmp_path, nano_model):
    from baryir import save_model
    from baryir.data.degradations import degrade
    from baryir.data.photos import read_rgb, to_uint8

    model_path = save_model(nano_model, tmp_path / "m.safetensors")
    inp, tgt = tmp_path / "pairs" / "input", tmp_path / "pairs" / "target"
    inp.mkdir(parents=True)
    tgt.mkdir(parents=True)
    from PIL import Image

    for i in range(2):
        clean = read_rgb(photo_dir / f"img{i}.png")[:, :61, :70]  # not a multiple of 8
        Image.fromarray(to_uint8(clean)).save(tgt / f"x{i}.png")
        Image.fromarray(to_uint8(degrade(clean, "derain", i))).save(inp / f"x{i}.png")
    report = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(model_path),
                "--pairs",
                str(inp),
                str(tgt),
                "--pairs-task",
                "derain",
                "--clean",
                str(photo_dir),
                "--tasks",
                "denoise_25",
                "--json",
                str(report),
                "--no-progress",
            ]
        )
        == 1  # everything ran; the fixture's broken.png was skipped
    )
    data = json.loads(report.read_text())
    assert [s.split(": ")[0] for s in data["skipped"]] == [str(photo_dir / "broken.png")]
    assert data["backend"] == "torch" and data["device"] == "cpu" and len(data["results"]) == 2
    rows = {r["task"]: r for r in data["results"]}
    assert rows["derain"]["n"] == 2 and rows["denoise_25"]["n"] == 4
    for r in data["results"]:
        assert 0 < r["ssim"] <= 1 and r["psnr"] > 5 and r["input_psnr"] > 5
        assert r["worst_psnr"] <= r["psnr"] and 0 <= r["made_worse"] <= r["n"]


def test_eval_skips_bad_pairs_by_name_and_measures_the_rest(photo_dir, tmp_path, nano_model, capsys):
    """A pair of two sizes, an unreadable target and an input without a target are each named
    and skipped; the others are measured, and the exit code says something was left out."""
    from PIL import Image

    from baryir import save_model

    model_path = save_model(nano_model, tmp_path / "m.safetensors")
    inp, tgt = tmp_path / "input", tmp_path / "target"
    inp.mkdir()
    tgt.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    for name in ("good", "sizes", "junk", "alone"):
        Image.fromarray(pixels).save(inp / f"{name}.png")
    Image.fromarray(pixels).save(tgt / "good.png")
    Image.fromarray(pixels[:, :24]).save(tgt / "sizes.png")
    (tgt / "junk.png").write_text("not a picture")
    report = tmp_path / "eval.json"
    argv = ["eval", "--model", str(model_path), "--pairs", str(inp), str(tgt), "--json", str(report), "--no-progress"]
    assert main(argv) == 1
    assert "skipped 3 file(s) or pair(s)" in capsys.readouterr().err
    data = json.loads(report.read_text())
    assert [r["n"] for r in data["results"]] == [1]
    skipped = "\n".join(data["skipped"])
    assert f"{inp / 'alone.png'}: no target with the same name" in skipped
    assert f"{inp / 'sizes.png'}: its size (24, 32) differs" in skipped
    assert f"{tgt / 'junk.png'}: not a readable image" in skipped


def test_eval_counts_the_images_made_worse():
    from baryir.evaluate import EvalItem, evaluate

    clean = torch.full((3, 16, 16), 0.5)
    noisy = clean + 0.05 * torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    items = [EvalItem("d", "t", f"{i}", noisy, clean) for i in range(3)] + [EvalItem("d", "c", "x", clean, clean)]
    worse = {r["task"]: r for r in evaluate(lambda x: x + 0.1, items, with_ssim=False, progress=False)}
    assert worse["t"]["made_worse"] == 3 and worse["t"]["worst_psnr"] < worse["t"]["input_psnr"]
    assert worse["c"]["made_worse"] == 1  # a clean photo that comes back changed came back worse
    better = {r["task"]: r for r in evaluate(lambda x: clean, items, with_ssim=False, progress=False)}
    assert better["t"]["made_worse"] == 0 and better["c"]["made_worse"] == 0  # the clean one came back as it was


def test_eval_cli_refuses_options_of_the_other_kind_of_backend(photo_dir, tmp_path, nano_model, capsys):
    from baryir import save_model

    model_path = save_model(nano_model, tmp_path / "m.safetensors")
    args = ["eval", "--model", str(model_path), "--clean", str(photo_dir), "--no-progress"]
    assert main([*args, "--precision", "int8"]) == 2
    assert "--backend torch evaluates in FP32" in capsys.readouterr().err
    assert main([*args, "--backend", "openvino", "--device", "cuda"]) == 2
    assert "--device applies to --backend torch" in capsys.readouterr().err
    assert main(args) == 1  # the same command without them runs (exit 1: the fixture's broken.png)
    assert "| photos | denoise_25 | 4 |" in capsys.readouterr().out


def test_a_run_folder_is_locked_while_a_run_uses_it(photo_dir, tmp_path):
    first = Trainer(_opts(photo_dir, tmp_path / "a", steps=1))
    with pytest.raises(RuntimeError, match="in use by a live training run"):
        Trainer(_opts(photo_dir, tmp_path / "a", steps=1))
    other = subprocess.run(  # another process sees the lock too, and names who holds it
        [sys.executable, "-c", _LOCK_PROBE, str(tmp_path / "a")], capture_output=True, text=True
    )
    assert other.returncode == 1 and f"pid {os.getpid()}" in other.stdout
    first.fit()
    assert Trainer(_opts(photo_dir, tmp_path / "a", steps=2, resume=True)).step == 1  # free again


_LOCK_PROBE = """
import sys
from pathlib import Path
from baryir.train import RunLock
try:
    RunLock(Path(sys.argv[1]))
except RuntimeError as e:
    print(e)
    sys.exit(1)
"""


def test_auto_precision_is_bf16_where_the_cpu_computes_it():
    from baryir.cpu import cpu_features
    from baryir.train import resolve_precision

    expected = "bf16" if cpu_features().get("bf16") else "fp32"
    assert resolve_precision(torch.device("cpu"), "auto") == expected
    assert resolve_precision(torch.device("cpu"), "fp32") == "fp32"
