"""ONNX Runtime runner: CPU, or the CUDA / TensorRT / CoreML execution providers when present."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from baryir.formats import DEGRADATION_NAME, INPUT_NAME, OUTPUT_NAME, needs_extra

from ..base import BackendUnavailable, OpTime, Runner, RunnerInfo
from ..verify import artifact_inside

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "coreml": ["CoreMLExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeRunner(Runner):
    """An ONNX artifact in ONNX Runtime; the precision is the graph's (from its manifest). With
    ``analysis`` (the artifact's encoder-only graph), ``run_degradation`` runs that graph instead
    of the whole model (ONNX Runtime computes every node whatever outputs are asked for)."""

    def __init__(
        self,
        path: str,
        device: str | None = None,
        precision: str = "fp32",
        threads: int = 0,
        analysis: str | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(needs_extra("The ONNX Runtime runner", "onnx")) from e
        device = device or "cpu"
        if device not in _PROVIDERS:
            raise ValueError(f"onnxruntime device must be one of {sorted(_PROVIDERS)}, not {device!r}")
        if _PROVIDERS[device][0] not in ort.get_available_providers():
            raise BackendUnavailable(
                f"{_PROVIDERS[device][0]} is not in this onnxruntime build (available: {ort.get_available_providers()})"
            )
        self.path, self.threads = path, threads
        self.session = ort.InferenceSession(path, self._options(), providers=_PROVIDERS[device])
        self.analysis = (
            ort.InferenceSession(analysis, self._options(), providers=_PROVIDERS[device]) if analysis else None
        )
        active = self.session.get_providers()[0].removesuffix("ExecutionProvider")
        self.info = RunnerInfo("onnxruntime", active, precision, path)

    def _options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        return options

    @classmethod
    def open(cls, path: str, device: str | None, precision: str | None, manifest: dict) -> OnnxRuntimeRunner:
        """The graph's precision is the manifest's; its encoder-only graph, if it has one, runs ``analyze``."""

        name = manifest.get("analysis_artifact")
        analysis = artifact_inside(Path(path).parent, name) if name is not None else None
        if analysis is not None and not analysis.is_file():
            raise FileNotFoundError(f"{analysis}: the manifest names it but it is missing; export the artifact again")
        return cls(
            path, device, manifest.get("precision") or precision or "fp32", analysis=str(analysis) if analysis else None
        )

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.session.get_outputs())

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def run_degradation(self, batch: np.ndarray) -> np.ndarray:
        return (self.analysis or self.session).run([DEGRADATION_NAME], {INPUT_NAME: batch})[0]

    def profile(self, batch: np.ndarray, runs: int) -> list[OpTime]:
        """ONNX Runtime's profiler (``enable_profiling``) on a second session with the same
        providers: each node's kernel time, summed over ``runs`` (the warm-up run left out)."""
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            options = self._options()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "ort")
            session = ort.InferenceSession(self.path, options, providers=self.session.get_providers())
            for _ in range(runs + 1):
                session.run([OUTPUT_NAME], {INPUT_NAME: batch})
            events = json.loads(Path(session.end_profiling()).read_text())
        run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
        after_warmup = run_starts[1] if len(run_starts) > 1 else 0
        totals: dict[tuple[str, str, str], float] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= after_warmup:
                args = e.get("args", {})
                key = (e["name"].removesuffix("_kernel_time"), args.get("op_name", "?"), args.get("provider", "?"))
                totals[key] = totals.get(key, 0.0) + e["dur"] / 1e3
        return [
            OpTime(name, op, kernel.removesuffix("ExecutionProvider"), ms / runs)
            for (name, op, kernel), ms in totals.items()
        ]

    def close(self) -> None:
        self.session = self.analysis = None
