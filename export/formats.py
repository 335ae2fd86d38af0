"""The table of export formats: which precisions and options each one allows."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Format:
    """One export target."""

    name: str
    artifact: str  # file (or package folder) name inside the artifact folder
    precisions: tuple[str, ...]
    needs: str  # pip extra that provides the exporter
    description: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "onnx",
            "model.onnx",
            ("fp32", "fp16", "int8"),
            "onnx",
            "ONNX (opset 17), dynamic batch/height/width; fp16 keeps the sensitive reductions in fp32",
        ),
        Format(
            "tensorrt",
            "model.engine",
            ("fp32", "fp16", "int8"),
            "tensorrt",
            "TensorRT engine built from the ONNX of the same precision (strongly typed), on an NVIDIA GPU",
        ),
        Format(
            "coreml",
            "model.mlpackage",
            ("fp32", "fp16"),
            "coreml",
            "CoreML mlprogram for iOS 16+, image or tensor I/O, enumerated or range shapes",
        ),
        Format(
            "openvino",
            "model.xml",
            ("fp32", "fp16", "int8"),
            "openvino",
            "OpenVINO IR (xml + bin), dynamic height/width; fp16 compresses weights",
        ),
    )
}


def parse_request(formats: str, precisions: str) -> list[tuple[Format, str]]:
    """Expand ``onnx,coreml|all`` x ``fp32,fp16`` into (format, precision) jobs.

    Every unknown name or disallowed combination is reported at once, before any work.
    """
    names = list(FORMATS) if formats == "all" else [f.strip() for f in formats.split(",") if f.strip()]
    precs = [p.strip() for p in precisions.split(",") if p.strip()]
    errors = [f"unknown format {n!r} (choose from {', '.join(FORMATS)} or all)" for n in names if n not in FORMATS]
    errors += [f"unknown precision {p!r} (choose from {', '.join(PRECISIONS)})" for p in precs if p not in PRECISIONS]
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


def markdown_table() -> str:
    """The format x precision x extra table of the README, made from :data:`FORMATS`."""
    lines = ["| format | precisions | install | artifact | what it is |", "|---|---|---|---|---|"]
    for f in FORMATS.values():
        extra = f"`pip install 'baryir[{f.needs}]'`"
        if "int8" in f.precisions:
            extra += " (int8 export: + `[quantize]`)"
        lines.append(f"| `{f.name}` | {', '.join(f.precisions)} | {extra} | `{f.artifact}` | {f.description} |")
    return "\n".join(lines)
