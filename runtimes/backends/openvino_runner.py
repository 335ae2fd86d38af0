"""OpenVINO runner: CPU / GPU / NPU with an explicit inference precision.

INT8 IRs run with static shapes: OpenVINO 2026.4's CPU plugin computes wrong INT8
convolutions when the spatial dimensions are dynamic (measured on the default model: 27 dB
against the quantized PyTorch model with dynamic H/W, 43.5 dB — the same as ONNX Runtime —
after reshaping to the input's shape). The runner compiles one static model per input shape
(a few seconds each, cached); tiled inference reuses the tile shape.
"""

from __future__ import annotations

import numpy as np

from baryir.formats import DEGRADATION_NAME, needs_extra

from ..base import BackendUnavailable, OpTime, Runner, RunnerInfo
from ..environment import int8_saturates, onednn_hides_bf16

_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
_LABELS = {hint: name for name, hint in _HINTS.items()}


def compile_openvino(core, model, device: str, config: dict, shape: tuple[int, ...] | None = None):
    """Compile an ``ov.Model``; with ``shape``, a static copy of it (what INT8 IRs need on the
    CPU plugin, see the module docstring)."""
    if shape is not None:
        model = model.clone()
        model.reshape(list(shape))
    return core.compile_model(model, device, config)


#: OpenVINO's devices that choose or combine the real ones (``AUTO``, ``HETERO:GPU,CPU`` ...):
#: refused, since the precision they run could not be stated.
_VIRTUAL_DEVICES = {"AUTO", "HETERO", "MULTI", "BATCH"}


class OpenVINORunner(Runner):
    """An IR (model.xml) compiled for ``device``. The inference precision is set explicitly
    (default f32: the CPU plugin would silently pick bf16 on AMX CPUs) and read back. An INT8 IR
    (``quantized``) takes ``int8`` (float parts, the ignored scope, at f32) or ``int8+bf16`` /
    ``int8+fp16`` (float parts at that precision: half the time on CPUs with bf16, docs/int8-cpus.md)."""

    def __init__(
        self, path: str, device: str | None = None, precision: str | None = None, quantized: bool = False
    ) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailable(needs_extra("The OpenVINO runner", "openvino")) from e
        device = (device or "CPU").upper()
        precision = precision or ("int8" if quantized else "fp32")
        kernels, _, parts = precision.partition("+")
        if quantized and (kernels != "int8" or (parts and parts not in _HINTS)):
            raise ValueError(f"{path}: an INT8 IR runs at int8, int8+bf16 or int8+fp16, not {precision!r}")
        if not quantized and precision not in _HINTS:
            raise ValueError(f"openvino precision of a float IR must be one of {sorted(_HINTS)}, not {precision!r}")
        self.core, self.device = ov.Core(), device
        available = self.core.available_devices  # e.g. ["CPU", "GPU.0", "GPU.1"]
        if device.split(":")[0] in _VIRTUAL_DEVICES:
            raise ValueError(
                f"OpenVINO's {device.split(':')[0]} picks the device itself, so the precision it runs is not known; "
                f"name one of {', '.join(available) or 'its devices'}"
            )
        if device not in available and device.split(".")[0] not in {d.split(".")[0] for d in available}:
            raise ValueError(
                f"OpenVINO sees no {device} device here (it has {', '.join(available) or 'none'}); "
                f"use --device {available[0] if available else 'CPU'}"
            )
        hint = _HINTS[parts or "fp32"] if quantized else _HINTS[precision]
        if hint == "bf16" and device == "CPU" and onednn_hides_bf16():
            hint = "f32"  # what the plugin does on a CPU without bf16; the label below says so
        self.config = {"INFERENCE_PRECISION_HINT": hint}
        self.static = quantized
        self.model = self.core.read_model(path)
        self.analysis = None  # the encoder-only sub-model for run_degradation, made when first asked
        self.requests: dict[tuple, object] = {}
        compiled = compile_openvino(self.core, self.model, device, self.config)  # reads back the real precision
        actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        label = _LABELS.get(actual, actual)
        if self.static:
            label = f"int8+{label}"
        else:
            self.requests[()] = compiled.create_infer_request()
        self.info = RunnerInfo("openvino", device, label, path)

    @classmethod
    def open(cls, path: str, device: str | None, precision: str | None, manifest: dict) -> OpenVINORunner:
        """An INT8 IR (the manifest says so) compiles static, with float parts at ``precision``."""
        return cls(path, device, precision, quantized=manifest.get("precision") == "int8")

    def _request(self, shape: tuple[int, ...], analysis: bool = False):
        key = (shape if self.static else ()) + (("analysis",) if analysis else ())
        if key not in self.requests:
            if len(self.requests) >= 8:  # a few tile/image shapes; drop the oldest
                self.requests.pop(next(iter(self.requests)))
            model = self._analysis_model() if analysis else self.model
            compiled = compile_openvino(self.core, model, self.device, self.config, shape if self.static else None)
            self.requests[key] = compiled.create_infer_request()
        return self.requests[key]

    def _analysis_model(self):
        """The IR cut down to what ``degradation`` needs: OpenVINO runs every node of a model,
        so this sub-model skips the decoder (and the encoder beyond what the readout reads)."""
        if self.analysis is None:
            import openvino as ov

            model = self.model.clone()
            result = next(o.get_node() for o in model.outputs if DEGRADATION_NAME in o.get_names())
            self.analysis = ov.Model([result], model.get_parameters(), "baryir-analysis")
        return self.analysis

    def miss_cause(self, manifest: dict) -> str | None:
        """INT8 on a CPU whose int8 kernels saturate (no VNNI/AMX, or oneDNN capped below them)."""
        if manifest.get("precision") != "int8" or not int8_saturates():
            return None
        low, high = manifest.get("weight_levels", (-127, 127))  # older exports: full-range weights
        if max(-low, high) > 64:
            return (
                "this CPU lacks VNNI/AMX (or ONEDNN_MAX_CPU_ISA hides them), so oneDNN's int8 kernels saturate "
                "with full-range 8-bit weights; re-export it with this baryir (OpenVINO INT8 gets 7-bit weights) "
                "or run the ONNX INT8 artifact with ONNX Runtime"
            )
        return "this CPU lacks VNNI/AMX and its int8 kernels still miss; run the ONNX INT8 artifact with ONNX Runtime"

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(name for output in self.model.outputs for name in output.get_names())

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._request(batch.shape).infer({0: batch})[0]).copy()

    def run_degradation(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._request(batch.shape, analysis=True).infer({0: batch})[0]).copy()

    def profile(self, batch: np.ndarray, runs: int) -> list[OpTime]:
        """OpenVINO's per-layer counters (``PERF_COUNT``): each executed layer's real time and the
        kernel it ran (``exec_type``: ``jit_avx512_bf16``, ``ref_f32``, ...), summed over ``runs``."""
        import openvino as ov

        config = {**self.config, ov.properties.enable_profiling: True}
        shape = batch.shape if self.static else None
        request = compile_openvino(self.core, self.model, self.device, config, shape).create_infer_request()
        request.infer({0: batch})
        totals: dict[tuple[str, str, str], float] = {}
        for _ in range(runs):
            request.infer({0: batch})
            for info in request.get_profiling_info():  # the counters of the last inference
                if info.status == ov.ProfilingInfo.Status.EXECUTED:
                    key = (info.node_name, info.node_type, info.exec_type)
                    totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1e3
        return [OpTime(name, op, kernel, ms / runs) for (name, op, kernel), ms in totals.items()]

    def close(self) -> None:
        self.requests.clear()
        self.model = self.analysis = None

    def __del__(self) -> None:  # infer requests and models go before the Core that made them
        if "requests" in self.__dict__:
            self.close()
