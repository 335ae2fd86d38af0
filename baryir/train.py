"""The BaryIR min-max training loop (single process or DistributedDataParallel).

Each step, as the published ``trainer_bary.py``:
1. model step: ``l1 * L1(restored, target) + mean_i lambda_i [rmse_i + 0.05 (orth_i +
   contra_i) - f_k(i)(bary_i)]`` with the potentials held fixed;
2. potentials step on the detached barycenter latents: minimise ``mean_i lambda_i
   f_k(i)(bary_i) + 10 mean_i (sum_k lambda_k f_k(bary_i))**2``.
``loss="l1"`` trains the same network with the L1 term alone (the ablation baseline).

Output folder: ``model.safetensors`` (latest weights, with config), ``model_ema.safetensors``
(their exponential moving average, with ``ema > 0``), ``potentials.safetensors``, ``state.pt``
(optimisers, step, RNG; read back with ``torch.load(weights_only=True)``), ``metrics.csv`` and
``metrics.json``; with ``keep_every``, ``snapshots/stepNNNNNN-model.safetensors`` (and ``-model_ema``)
keep the weights of every such step for interpolation or a later pick.

SIGINT (Ctrl-C) or SIGTERM (``timeout``, a batch scheduler's pre-emption) ends the run after
the step in progress, with everything saved for ``--resume``; a second signal aborts at once.
"""

from __future__ import annotations

import copy
import csv
import fcntl
import json
import math
import os
import shutil
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from types import FrameType

import torch
import torch.distributed as dist
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from .checkpoints import build_model, load_model, read_safetensors, save_model, save_potentials
from .cpu import bf16_native
from .data.datasets import AllInOneDataset
from .evaluate import EvalItem, evaluate
from .inference import restore_tensor, torch_device
from .io.atomic import atomic_write, refuse_overwriting_inputs
from .losses import bary_terms, model_loss, potentials_loss
from .model import Potentials
from .options import TrainOptions
from .signals import TrainingStopped


class _CountingSampler(Sampler[int]):
    """Global sample indices start, start+1, ... (strided by rank) so resumes are exact."""

    def __init__(self, start: int, rank: int, world: int, batch: int) -> None:
        self.start, self.rank, self.world, self.batch = start, rank, world, batch

    def __iter__(self):
        step = self.start
        while True:
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)
            step += 1


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopRequest:
    """Context manager that turns SIGINT/SIGTERM into a request to stop after the current
    step (a second signal raises KeyboardInterrupt). Outside the main thread it installs
    nothing and never requests a stop."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum:
            raise KeyboardInterrupt(f"second {name}: aborted without saving")
        self.signum = signum
        # os.write, not print: a handler may interrupt a print to the same stream
        os.write(2, f"\n{name}: saving after this step (send it again to abort at once)\n".encode())

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def agreed(self, world: int, device: torch.device) -> int:
        """The signal any rank received (0 if none): all ranks must stop at the same step."""
        if world == 1:
            return self.signum
        flag = torch.tensor([self.signum], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGINT/SIGTERM to the training process, which stops them
    after saving (a signal to the whole process group would otherwise kill them mid-batch)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def learning_rate(opts: TrainOptions, step: int, base: float) -> float:
    """Linear warm-up then ``cosine`` (to 1 %), ``step`` (x0.5 at 50/75/90 %) or ``constant``."""
    if step < opts.warmup:
        return base * (step + 1) / opts.warmup
    frac = (step - opts.warmup) / max(1, opts.steps - opts.warmup)
    if opts.schedule == "cosine":
        return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
    if opts.schedule == "step":
        return base * 0.5 ** sum(frac >= m for m in (0.5, 0.75, 0.9))
    return base


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=1e-4)
    raise ValueError(f"optimizer must be 'rmsprop' (published) or 'adamw', not {name!r}")


class WeightEMA:
    """Exponential moving average of a model's weights, updated after every model step:
    ``shadow = decay * shadow + (1 - decay) * weights`` (integer buffers are copied). It starts
    from the weights the run starts from (``--init`` or the fresh initialisation)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be a decay in (0, 1), e.g. 0.999, not {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        for shadow, current in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if shadow.is_floating_point():
                shadow.lerp_(current, 1.0 - self.decay)
            else:
                shadow.copy_(current)


#: What a run writes into its --out folder.
RUN_FILES = (
    "model.safetensors",
    "model_ema.safetensors",
    "potentials.safetensors",
    "state.pt",
    "metrics.csv",
    "metrics.json",
)


def _device(opts: TrainOptions) -> torch.device:
    if opts.device != "auto":
        return torch_device(opts.device)
    if dist.is_initialized() and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto`` is bf16 on CUDA and on CPUs that compute bf16 natively (AVX512-BF16, AMX;
    ~1.4x faster steps than FP32 there), else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and bf16_native()) else "fp32"


def _autocast(device: torch.device, precision: str):
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be fp32, bf16 or auto, not {precision!r}")


class RunLock:
    """An exclusive lock on a run folder (``.lock``, flock) for as long as a run uses it: a second
    live run on the same folder is refused instead of interleaving its checkpoints. The kernel
    drops the lock when the process ends, however it ends, so a killed run never leaves it."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ".lock"
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read(64).strip() or "another process"
            self._file.close()
            raise RuntimeError(
                f"{folder} is in use by a live training run ({holder}); wait for it or stop it, "
                "or give this run another --out"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        """Let another run use the folder (also done by the kernel when the process ends)."""
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


class Trainer:
    """Holds the model, potentials, optimisers and data for one training run."""

    def __init__(
        self, opts: TrainOptions, validation: list[EvalItem] | None = None, model: torch.nn.Module | None = None
    ) -> None:
        """``model`` (optional) replaces the one ``opts.init``/``opts.config`` would build
        (quantization-aware training passes its NNCF-quantized BaryNet)."""
        if opts.loss not in ("bary", "l1"):
            raise ValueError(f"loss must be 'bary' or 'l1', not {opts.loss!r}")
        self.opts, self.validation = opts, validation or []
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.device = _device(opts)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one patch size: let cuDNN time and keep its fastest kernels
        self.out = Path(opts.out)
        self._lock = RunLock(self.out) if self.rank == 0 else None
        if opts.init and not opts.resume:  # a resumed run reads its weights from --out, not --init
            refuse_overwriting_inputs([opts.init], [self.out / name for name in RUN_FILES])
        torch.manual_seed(opts.seed)

        self.data = AllInOneDataset(
            opts.data,
            opts.tasks,
            opts.patch_size,
            seed=opts.seed,
            content_haze=opts.content_haze,
            content_variety=opts.content_variety,
            content_sky=opts.content_sky,
        )
        if model is None:
            model = load_model(opts.init) if opts.init else build_model(opts.config)
        self.model = model.train().to(self.device)
        self.model.readout = None  # fitted on the starting weights; training changes them (refit after)
        cfg = self.model.config
        self.pots = Potentials(len(self.data.sources), cfg.level_widths[3], cfg.potential_pool).to(self.device)
        self.lambdas = self.data.lambdas.to(self.device)
        self.opt_model = _optimizer(opts.optimizer, self.model.parameters(), opts.lr)
        self.opt_pots = _optimizer(opts.optimizer, self.pots.parameters(), opts.pots_lr or opts.lr)
        self.ema = WeightEMA(self.model, opts.ema) if opts.ema else None
        self.step = 0
        if opts.resume:
            self._load_state()
        self.ddp_model: torch.nn.Module = self.model
        self.ddp_pots: torch.nn.Module = self.pots
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)
            self.ddp_pots = DistributedDataParallel(self.pots, device_ids=ids)
        if opts.compile:  # ~2x faster steps on CPU and GPU after a few minutes of compilation
            self.ddp_model = torch.compile(self.ddp_model)

    # ------------------------------------------------------------------ state
    def _load_state(self) -> None:
        state_path = self.out / "state.pt"
        if not state_path.exists():
            raise FileNotFoundError(f"--resume: {state_path} not found; train without --resume first")
        self.load_weights()
        self.pots.load_state_dict(read_safetensors(self.out / "potentials.safetensors")[0])
        if self.ema is not None:
            ema_path = self.out / "model_ema.safetensors"
            if not ema_path.exists():
                raise FileNotFoundError(
                    f"--resume --ema: {ema_path} not found (the run was started without --ema); "
                    "resume without --ema, or start a new run with --init and --ema"
                )
            self.ema.model.load_state_dict(read_safetensors(ema_path)[0])
        state = torch.load(state_path, map_location=self.device, weights_only=True)
        self.opt_model.load_state_dict(state["opt_model"])
        self.opt_pots.load_state_dict(state["opt_pots"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"])

    def save(self) -> None:
        """Write weights, potentials and resumable state (rank 0 only, atomically)."""
        if self.rank:
            return
        self.save_weights()
        if self.ema is not None:
            meta = {**self.run_metadata(), "ema": self.ema.decay}
            save_model(self.ema.model, self.out / "model_ema.safetensors", meta)
        save_potentials(self.pots, self.out / "potentials.safetensors")
        state = {
            "opt_model": self.opt_model.state_dict(),
            "opt_pots": self.opt_pots.state_dict(),
            "step": self.step,
            "rng": torch.get_rng_state(),
        }
        atomic_write(self.out / "state.pt", lambda tmp: torch.save(state, tmp))
        if self.opts.keep_every and self.step % self.opts.keep_every == 0:
            (self.out / "snapshots").mkdir(exist_ok=True)
            for name in ("model", "model_ema") if self.ema is not None else ("model",):  # not a stale EMA file
                snapshot = self.out / "snapshots" / f"step{self.step:06d}-{name}.safetensors"
                atomic_write(snapshot, lambda tmp, src=name: shutil.copyfile(self.out / f"{src}.safetensors", tmp))

    def run_metadata(self) -> dict:
        """What a saved model records of its run: step, task mix and loss."""
        return {"step": self.step, "tasks": self.opts.tasks, "loss": self.opts.loss}

    def save_weights(self) -> None:
        """Write the model's weights (``model.safetensors`` with config)."""
        save_model(self.model, self.out / "model.safetensors", self.run_metadata())

    def load_weights(self) -> None:
        """Read back what :meth:`save_weights` wrote (for ``--resume``)."""
        self.model.load_state_dict(read_safetensors(self.out / "model.safetensors")[0])

    def extra_loss(self, degraded: torch.Tensor, restored: torch.Tensor, logs: dict[str, float]) -> torch.Tensor | None:
        """An additional model-step term (none here; QAT adds distillation)."""
        return None

    # ------------------------------------------------------------------ steps
    def train_step(
        self, degraded: torch.Tensor, target: torch.Tensor, task: torch.Tensor, source: torch.Tensor
    ) -> dict[str, float]:
        """One min-max step; returns the logged loss terms."""
        w, opts = self.opts.weights, self.opts
        for group in self.opt_model.param_groups:
            group["lr"] = learning_rate(opts, self.step, opts.lr)
        for group in self.opt_pots.param_groups:
            group["lr"] = learning_rate(opts, self.step, opts.pots_lr or opts.lr)
        src_w = self.lambdas[source]
        with _autocast(self.device, opts.precision):
            restored, src_lat, bary, residual = self.ddp_model(degraded, return_latents=True)
        restored, src_lat, bary, residual = (t.float() for t in (restored, src_lat, bary, residual))
        if opts.loss == "l1":
            l1 = (restored - target).abs().mean()
            total, logs = w.l1 * l1, {"l1": l1.item()}
        else:
            terms = bary_terms(src_lat, bary, residual, task)
            frozen = {k: v.detach() for k, v in self.pots.named_parameters()}
            f_values = functional_call(self.pots, frozen, (bary,))
            own = f_values.gather(1, source[:, None]).squeeze(1)
            total, logs = model_loss(restored, target, terms, own, src_w, w)
        extra = self.extra_loss(degraded, restored, logs)
        if extra is not None:
            total = total + extra
        self.opt_model.zero_grad(set_to_none=True)
        total.backward()
        self.opt_model.step()
        if self.ema is not None:
            self.ema.update(self.model)
        if opts.loss == "bary":
            pots_loss = potentials_loss(self.ddp_pots(bary.detach()), source, src_w, self.lambdas, w)
            self.opt_pots.zero_grad(set_to_none=True)
            pots_loss.backward()
            self.opt_pots.step()
            logs["pots"] = pots_loss.item()
        logs["loss"] = total.item()
        self.step += 1
        return logs

    def validate(self, model: torch.nn.Module | None = None) -> float:
        """Mean PSNR of ``model`` (default: the trained weights) over the validation items."""
        model = self.model if model is None else model
        model.eval()
        rows = evaluate(lambda img: restore_tensor(model, img), self.validation, with_ssim=False, progress=False)
        self.model.train()
        return sum(r["psnr"] * r["n"] for r in rows) / sum(r["n"] for r in rows)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train until ``opts.steps``; returns a summary (also written to metrics.json).
        Raises :class:`TrainingStopped` after saving if SIGINT/SIGTERM ended the run early."""
        opts = self.opts
        self.out.mkdir(parents=True, exist_ok=True)
        loader = DataLoader(
            self.data,
            batch_size=opts.batch_size,
            num_workers=opts.workers,
            sampler=_CountingSampler(self.step, self.rank, self.world, opts.batch_size),
            persistent_workers=opts.workers > 0,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_ignore_stop_signals,
        )
        csv_path = self.out / "metrics.csv"
        fields = [
            "step",
            "time_s",
            "lr",
            "loss",
            "l1",
            "bary",
            "latent_rmse",
            "orthogonality",
            "contrastive",
            "pots",
            "val_psnr",
        ] + (["val_psnr_ema"] if self.ema is not None else [])
        new_csv = not (opts.resume and csv_path.exists())
        if self.rank == 0:
            csv_file = open(csv_path, "w" if new_csv else "a", newline="")
            writer = csv.DictWriter(csv_file, fieldnames=fields, extrasaction="ignore")
            if new_csv:
                writer.writeheader()
        self.model.train()
        bar = tqdm(
            total=opts.steps,
            initial=self.step,
            disable=not opts.progress or self.rank != 0,
            desc=f"train {opts.loss}",
            unit="step",
            dynamic_ncols=True,
        )
        start, val_psnr, history, stopped_by = time.time(), None, [], 0
        with _StopRequest() as stop_request:
            for degraded, target, task, source in loader:
                if self.step >= opts.steps:
                    break
                logs = self.train_step(*(t.to(self.device) for t in (degraded, target, task, source)))
                logs.update(
                    step=self.step, time_s=round(time.time() - start, 1), lr=self.opt_model.param_groups[0]["lr"]
                )
                done = self.step >= opts.steps
                if self.validation and (self.step % opts.val_every == 0 or done) and self.rank == 0:
                    val_psnr = logs["val_psnr"] = self.validate()
                    history.append({"step": self.step, "val_psnr": val_psnr})
                    if self.ema is not None:
                        logs["val_psnr_ema"] = history[-1]["val_psnr_ema"] = self.validate(self.ema.model)
                stopped_by = stop_request.agreed(self.world, self.device)
                kept = opts.keep_every and self.step % opts.keep_every == 0
                if self.step % opts.ckpt_every == 0 or kept or done or stopped_by:
                    self.save()
                if self.rank == 0:
                    writer.writerow(logs)
                    csv_file.flush()
                    bar.set_postfix(
                        {k: f"{logs[k]:.4g}" for k in ("l1", "bary", "pots") if k in logs}
                        | ({"val": f"{val_psnr:.2f}"} if val_psnr is not None else {})
                    )
                    bar.update(1)
                if stopped_by:
                    break
        if self.step >= opts.steps:
            stopped_by = 0  # a signal during the last step: the run is complete, not stopped
        bar.close()
        summary = {
            "options": {**asdict(opts)},
            "steps": self.step,
            "seconds": round(time.time() - start, 1),
            "device": str(self.device),
            "world_size": self.world,
            "sources": self.data.sources,
            "lambdas": self.lambdas.tolist(),
            "validation": history,
            "stopped_by": signal.Signals(stopped_by).name if stopped_by else None,
        }
        if self.rank == 0:
            csv_file.close()
            atomic_write(self.out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
            self._lock.release()
        if stopped_by:
            raise TrainingStopped(stopped_by, self.step, opts.steps, self.out)
        return summary


def train(opts: TrainOptions, validation: list[EvalItem] | None = None) -> dict:
    """Run training; under ``torchrun`` (WORLD_SIZE > 1) it joins the process group first."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and opts.device != "cpu" else "gloo")
    try:
        return Trainer(opts, validation).fit()
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
