"""``run_quantize``: what ``baryir quantize`` does, from a float model to a quantized checkpoint."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from baryir.checkpoints import load_model, resolve_model_path
from baryir.evaluate import EvalItem
from baryir.formats import INT8_HAS_NO_READOUT
from baryir.io.atomic import atomic_write, refuse_overwriting_inputs
from baryir.io.digest import file_sha256
from baryir.model.readout import weights_digest

from .calibration import calibration_batches
from .checkpoint import load_quantized, save_quantized
from .options import QuantizeOptions
from .ptq import quantize_ptq
from .qat import QAT_WEIGHTS, QATTrainer, check_learn_from
from .scheme import Int8Scheme


def run_quantize(opts: QuantizeOptions, validation: list[EvalItem] | None = None) -> Path:
    """PTQ (``method="ptq"``) or PTQ followed by QAT; returns the quantized checkpoint
    (``OUT/model-int8.safetensors``) and writes ``OUT/quantize.json`` with what was done."""
    if opts.method not in ("ptq", "qat"):
        raise ValueError(f"method must be 'ptq' or 'qat', not {opts.method!r}")
    if opts.method == "qat":
        check_learn_from(opts.learn_from, opts.distill)  # before PTQ, not after it
    out = Path(opts.out)
    target = out / QAT_WEIGHTS
    scheme = Int8Scheme(ignored=opts.ignored, model_type=opts.model_type, target_device=opts.target_device)
    source = resolve_model_path(opts.model)
    if not opts.resume:
        refuse_overwriting_inputs([source], [target, out / "quantize.json"])
    fp32 = load_model(source)
    # the file it came from, and the weights themselves (a file re-saved with another readout or
    # metadata holds the same weights: the INT8 model still belongs to it)
    provenance = {
        "source": str(opts.model),
        "source_sha256": file_sha256(source),
        "source_weights": weights_digest(fp32.state_dict()),
    }
    start = time.time()
    summary: dict = {"options": asdict(opts), "scheme": asdict(scheme), **provenance}
    if opts.resume:
        if not target.exists():
            raise FileNotFoundError(f"--resume: {target} not found; run without --resume first")
        quantized = load_quantized(target)
    else:
        batches = calibration_batches(
            opts.data, opts.tasks, opts.calib_samples, opts.calib_patch, seed=opts.seed + 1234
        )
        quantized = quantize_ptq(fp32, batches, scheme)
        save_quantized(quantized, target, scheme, {"method": "ptq", **provenance})
        summary["ptq_seconds"] = round(time.time() - start, 1)
    if opts.method == "qat":
        train_opts = opts.train_options()
        QATTrainer(train_opts, quantized, scheme, fp32, opts.distill, opts.learn_from, provenance, validation).fit()
    if fp32.readout is not None:
        summary["readout"] = INT8_HAS_NO_READOUT
    summary["seconds"] = round(time.time() - start, 1)
    atomic_write(out / "quantize.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    return target
