"""The one table of deployment formats, read by the exporters, the runtime loader, the runners,
parity and the README: artifact names and suffixes, backend, precisions, options, the pip extra,
and the tensor contract every artifact keeps (torch-free, so the device runtime reads it too)."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Every artifact's input and output tensor: (N, 3, H, W) RGB float32 in [0, 1].
INPUT_NAME = "image"
OUTPUT_NAME = "restored"
#: The second output of artifacts whose model has a degradation readout: (N, classes)
#: probabilities, the class names in the manifest's ``outputs``.
DEGRADATION_NAME = "degradation"
#: The most classes a degradation output may name (files and manifests are checked against it).
MAX_DEGRADATION_CLASSES = 16
#: Why quantized models and their artifacts have no degradation output. INT8 rounding of the
#: encoder features the readout pools moves its class probabilities by up to 0.25 (a readout
#: fitted on the quantized model itself), and ONNX Runtime's integer kernels by 0.35 more against
#: NNCF's emulation: such exports fail their own check (docs/quantization.md).
INT8_HAS_NO_READOUT = (
    "INT8 models carry no degradation readout (INT8 rounding moves its probabilities, docs/quantization.md); "
    "run analyze / restore --skip-clean with the float model or its FP32/FP16 artifact"
)
#: Where the shipped models live: ``<name>.safetensors`` (float) and, in the ``SHIPPED_INT8``
#: subfolder, ``<name>.safetensors`` (its INT8 version).
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"
SHIPPED_INT8 = "int8"


def shipped_files(name: str) -> list[Path]:
    """The files a shipped model name (``default``, ``default-v2``...) stands for, float and INT8."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return []
    return [
        p
        for p in (SHIPPED_WEIGHTS / f"{name}.safetensors", SHIPPED_WEIGHTS / SHIPPED_INT8 / f"{name}.safetensors")
        if p.is_file()
    ]


#: H and W must be multiples of this (three 2x downsamplings); runners pad to it.
PAD_MULTIPLE = 8
#: The exact graph rewrites every export and every new INT8 model applies, in order (their code is
#: in ``baryir.model.rewrites``; the names live here so torch-free code can read them).
DEPLOYMENT_REWRITES: tuple[str, ...] = ("split_channel_chunks",)

PRECISIONS = ("fp32", "fp16", "int8")
#: Precisions a runner can be asked for: the export precisions, bf16 (OpenVINO's inference hint)
#: and int8+bf16 (OpenVINO's INT8 kernels with the float parts of the graph in bf16).
RUN_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8+bf16")


def export_precision_of(backend: str, precision: str) -> str:
    """The artifact precision a run precision needs: OpenVINO computes an fp32 artifact at fp16
    or bf16, and an int8 one with its float parts at bf16; other backends run what they were
    given. A combination no artifact serves is a ValueError."""
    picks = backend in BY_BACKEND and BY_BACKEND[backend].precision_at_runtime
    if precision == "int8+bf16":
        if not picks:
            raise ValueError("int8+bf16 (float parts of an INT8 graph in bf16) is a setting of OpenVINO")
        return "int8"
    if picks and precision in ("fp16", "bf16"):
        return "fp32"
    return precision


@dataclass(frozen=True)
class Format:
    """One export target and the runtime that runs it."""

    name: str
    artifact: str  # file (or package folder) name inside the artifact folder
    suffixes: tuple[str, ...]  # artifact suffixes the loader recognises
    backend: str  # runner name (load_runner, parity, bench)
    runtime_package: str  # the distribution whose version the manifest and verify record
    precisions: tuple[str, ...]
    needs: str  # pip extra that provides the exporter and the runtime
    description: str
    exporter: str  # "module:function" of its exporter, imported only when it exports
    runner: str  # "module:Class" of its runner, imported only when one is opened (optional backends)
    options: dict[str, Any] = field(default_factory=dict)  # export options only this format takes, with defaults
    precision_at_runtime: bool = False  # the runtime picks the compute precision (else the graph fixes it)
    runs_on: tuple[str, ...] = ()  # platform.system() values its runtime predicts on (empty: any)
    #: exact rewrites this format's float exports add to DEPLOYMENT_REWRITES: measured to pay on its
    #: runtime and to cost on another's (docs/benchmarks.md), so not applied to every export
    float_rewrites: tuple[str, ...] = ()
    #: exact rewrites this format's INT8 exports apply to the quantized model on top of those it
    #: was quantized with: only the float computation between its quantizers changes (measured to
    #: pay on this runtime and to cost on others', docs/benchmarks.md)
    int8_rewrites: tuple[str, ...] = ()
    also_runs: tuple[str, ...] = ()  # other formats whose artifacts this format's runtime runs as they are
    #: files of its export folder that the target device may build again (a TensorRT engine is
    #: specific to one GPU and TensorRT version): left out of the manifest's digests, checked by
    #: their output alone
    built_on_device: tuple[str, ...] = ()
    compare_options: dict[str, Any] = field(default_factory=dict)  # export options of artifacts parity/bench compare

    def rewrites(self, common: tuple[str, ...]) -> tuple[str, ...]:
        """The rewrites of this format's float export on top of ``common`` (none when ``common``
        is empty: the training graph as it is)."""
        return (*common, *(r for r in self.float_rewrites if r not in common)) if common else ()

    def cannot_run_here(self) -> str | None:
        """Why this platform cannot run the format's runtime (conversion may still work), or None."""
        if self.runs_on and platform.system() not in self.runs_on:
            names = {"Darwin": "macOS", "Linux": "Linux", "Windows": "Windows"}
            where = " or ".join(names.get(p, p) for p in self.runs_on)
            return f"{self.name} prediction needs {where} (conversion works everywhere); this is {platform.system()}"
        return None


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "onnx",
            "model.onnx",
            (".onnx",),
            "onnxruntime",
            "onnxruntime",
            ("fp32", "fp16", "int8"),
            "onnx",
            "ONNX (opset 17), dynamic batch/height/width; fp16 keeps the sensitive reductions in fp32",
            "baryir.export.onnx_export:export_artifact",
            "baryir.runtimes.backends.onnxruntime_runner:OnnxRuntimeRunner",
            float_rewrites=("conv_mean_norms", "conv_pixel_shuffles"),
        ),
        Format(
            "tensorrt",
            "model.engine",
            (".engine", ".plan"),
            "tensorrt",
            "tensorrt",
            ("fp32", "fp16", "int8"),
            "tensorrt",
            "TensorRT engine built from the ONNX of the same precision (strongly typed), on an NVIDIA GPU",
            "baryir.export.tensorrt_export:export_artifact",
            "baryir.runtimes.backends.tensorrt_runner:TensorRTRunner",
            {"max_batch": 1},
            built_on_device=("model.engine", "timing.cache"),
        ),
        Format(
            "coreml",
            "model.mlpackage",
            (".mlpackage", ".mlmodel"),
            "coreml",
            "coremltools",
            ("fp32", "fp16"),
            "coreml",
            "CoreML mlprogram for iOS 16+, image or tensor I/O, enumerated or range shapes",
            "baryir.export.coreml_export:export_artifact",
            "baryir.runtimes.backends.coreml_runner:CoreMLRunner",
            {"coreml_io": "image", "coreml_flexible": "enumerated", "coreml_weights": "float"},
            runs_on=("Darwin",),
            compare_options={"coreml_io": "tensor"},  # parity and bench compare float tensors
        ),
        Format(
            "openvino",
            "model.xml",
            (".xml",),
            "openvino",
            "openvino",
            ("fp32", "fp16", "int8"),
            "openvino",
            "OpenVINO IR (xml + bin), dynamic height/width; fp16 compresses weights",
            "baryir.export.openvino_export:export_artifact",
            "baryir.runtimes.backends.openvino_runner:OpenVINORunner",
            precision_at_runtime=True,
            float_rewrites=("conv_mean_norms",),
            int8_rewrites=("token_attention",),
            also_runs=("onnx",),
        ),
    )
}
BY_BACKEND: dict[str, Format] = {f.backend: f for f in FORMATS.values()}
#: Every runner name: PyTorch for checkpoints, then one per format.
BACKEND_NAMES = ("torch", *BY_BACKEND)
#: The runner of checkpoints (no export format: the model file itself).
TORCH_RUNNER = "baryir.runtimes.backends.torch_runner:TorchRunner"


def needs_extra(what: str, extra: str, note: str = "") -> str:
    """The one message for a missing optional dependency: what needs it and the pip command."""
    return f"{what} needs the {extra} extra: pip install 'baryir[{extra}]'{note}"


def format_of_file(path: str | Path) -> Format | None:
    """The format whose artifact suffix ``path`` has (None for a checkpoint or anything else)."""
    suffix = Path(path).suffix
    return next((f for f in FORMATS.values() if suffix in f.suffixes), None)


def artifact_bytes(path: str | Path) -> int:
    """Size of an artifact: a file, or an export folder without its ``golden.npz`` and
    ``manifest.json`` (what a device ships)."""
    path = Path(path)
    if path.is_dir():
        return sum(
            f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name not in ("golden.npz", "manifest.json")
        )
    return path.stat().st_size


def parse_request(formats: str, precisions: str) -> list[tuple[Format, str]]:
    """Expand ``onnx,coreml|all`` x ``fp32,fp16`` into (format, precision) jobs.

    Every unknown name or disallowed combination is reported at once, before any work.
    """
    # a name given twice is one job (dict.fromkeys keeps the order)
    names = (
        list(FORMATS) if formats == "all" else list(dict.fromkeys(f.strip() for f in formats.split(",") if f.strip()))
    )
    precs = list(dict.fromkeys(p.strip() for p in precisions.split(",") if p.strip()))
    errors = [f"unknown format {n!r} (choose from {', '.join(FORMATS)} or all)" for n in names if n not in FORMATS]
    errors += [f"unknown precision {p!r} (choose from {', '.join(PRECISIONS)})" for p in precs if p not in PRECISIONS]
    if not names:
        errors.append(f"--format names no format (choose from {', '.join(FORMATS)} or all)")
    if not precs:
        errors.append(f"--precision names no precision (choose from {', '.join(PRECISIONS)})")
    if errors:
        raise ValueError("; ".join(errors))
    jobs, refused = [], []
    for name in names:
        for p in precs:
            (jobs if p in FORMATS[name].precisions else refused).append((FORMATS[name], p))
    if refused:
        raise ValueError(
            "; ".join(f"{f.name} does not support {p} (allowed: {', '.join(f.precisions)})" for f, p in refused)
        )
    return jobs


def export_options(formats: list[Format], given: dict[str, Any]) -> dict[str, Any]:
    """The options of the requested ``formats`` with defaults filled in; an option that none of
    them takes is an error (``--coreml-weights pal4 --format onnx`` is not silently ignored)."""
    owners = {name: f.name for f in FORMATS.values() for name in f.options}
    unknown = sorted(set(given) - set(owners))
    if unknown:
        raise ValueError(f"unknown export options {unknown}")
    wanted = {f.name for f in formats}
    stray = [f"--{k.replace('_', '-')} applies to {owners[k]} only" for k in given if owners[k] not in wanted]
    if stray:
        raise ValueError("; ".join(stray) + ": add that format to --format or drop the option")
    return {k: given.get(k, v) for f in formats for k, v in f.options.items()}


def markdown_table() -> str:
    """The format x precision x extra table of the README, made from :data:`FORMATS`."""
    lines = ["| format | precisions | install | artifact | what it is |", "|---|---|---|---|---|"]
    for f in FORMATS.values():
        extra = f"`pip install 'baryir[{f.needs}]'`"
        if "int8" in f.precisions:
            extra += " (int8 export: + `[quantize]`)"
        lines.append(f"| `{f.name}` | {', '.join(f.precisions)} | {extra} | `{f.artifact}` | {f.description} |")
    return "\n".join(lines)
