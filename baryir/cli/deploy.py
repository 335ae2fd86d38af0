"""Commands that make and run artifacts: ``export``, ``restore``, ``analyze`` and ``verify``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from baryir.formats import BACKEND_NAMES, FORMATS

from .common import name_fragment, non_negative, positive, sizes, write_json

#: The per-format export options (argparse dests), from the format table.
EXPORT_OPTIONS = tuple(name for f in FORMATS.values() for name in f.options)


def cmd_export(args: argparse.Namespace) -> int:
    from baryir.export.api import ExportValidationError, export_model
    from baryir.export.common import DEFAULT_SHAPES

    try:
        results = export_model(
            args.model,
            args.format,
            args.precision,
            args.out,
            shapes=tuple(args.shapes or DEFAULT_SHAPES),
            validate=not args.no_validate,
            large=args.validate_large,
            **{k: getattr(args, k) for k in EXPORT_OPTIONS if getattr(args, k) is not None},
        )
    except ExportValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("| format | precision | folder | MB | seconds | worst max abs | worst PSNR vs torch |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in results:
        rows = r.get("validation", [])
        worst_abs = max((v["max_abs"] for v in rows), default=float("nan"))
        worst_psnr = min((v["psnr"] for v in rows), default=float("nan"))
        checked = f"{worst_abs:.2e} | {worst_psnr:.1f}" if rows else "not validated here | -"
        print(
            f"| {r['format']} | {r['precision']} | {r['folder']} | {r['artifact_bytes'] / 1e6:.2f} "
            f"| {r['export_seconds']} | {checked} |"
        )
        if r.get("validation_note"):
            print(f"  note: {r['validation_note']}")
        if r.get("engine_built") is False:
            print(f"  note: engine not built here ({r['reason']})")
    if args.json:
        write_json(args.json, results)
    return 0


def _input_images(items: list[str]) -> tuple[list[Path], bool]:
    """(image files, whether an input named no image) of restore's and analyze's INPUTs; what
    is left out is said on stderr."""
    from baryir.runtimes.restore import expand_inputs

    empty = [item for item in items if not item.strip()]
    for _ in empty:  # Path("") is the current folder: never read it by accident
        print("error: '': an empty input name names no file; give a file, folder or pattern", file=sys.stderr)
    paths, skipped, unmatched = expand_inputs([item for item in items if item.strip()])
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    for item in unmatched:
        what = "folder holds no image files" if Path(item).is_dir() else "pattern matched no file"
        print(f"error: {item}: {what}; give files, folders of images or a pattern that matches", file=sys.stderr)
    if not paths:
        print("error: no input images matched", file=sys.stderr)
    return paths, bool(empty or unmatched)


def _open_runner(args: argparse.Namespace):
    from baryir.runtimes import Tiling, load_runner
    from baryir.runtimes.loader import model_dim

    runner = load_runner(args.model, args.backend, args.device, args.precision, verify=not args.no_verify)
    info = runner.info
    print(f"backend {info.backend} on {info.device} at {info.precision} ({info.artifact})", file=sys.stderr)
    tiling = Tiling(args.tile, args.overlap) if args.tile else None
    return runner, tiling, (model_dim(args.model), args.memory_mb)


def _scores_text(scores: dict[str, float]) -> str:
    return ", ".join(f"{c} {p:.2f}" for c, p in sorted(scores.items(), key=lambda kv: -kv[1]))


def cmd_restore(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from baryir.runtimes.restore import plan_outputs, restore_file

    paths, empty = _input_images(args.inputs)
    if not paths:
        return 2
    suffix = f".{args.format}" if args.format else None
    jobs, refused = plan_outputs(paths, Path(args.out), suffix, args.suffix)
    for result in refused:
        print(f"error: {result.input}: {result.error}", file=sys.stderr)
    failures = len(refused)
    if jobs:
        runner, tiling, auto = _open_runner(args)
        if args.skip_clean:
            runner.require_degradation()
        for path, out_path in tqdm(jobs, desc="restore", unit="img", disable=args.no_progress):
            result = restore_file(runner, path, out_path, tiling, auto, args.skip_clean)
            if result.error:
                failures += 1
                tqdm.write(f"error: {result.input}: {result.error}", file=sys.stderr)
            for note in result.notes:
                tqdm.write(f"note: {result.input}: {note}", file=sys.stderr)
    print(f"restored {len(paths) - failures} of {len(paths)} image(s) into {args.out}", file=sys.stderr)
    return 1 if failures or empty else 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from baryir.runtimes.restore import analyze_file

    paths, empty = _input_images(args.inputs)
    if not paths:
        return 2
    runner, tiling, auto = _open_runner(args)
    runner.require_degradation()
    results = []
    for path in tqdm(paths, desc="analyze", unit="img", disable=args.no_progress):
        result = analyze_file(runner, path, tiling, auto)
        results.append(result)
        if result.error:
            tqdm.write(f"error: {result.input}: {result.error}", file=sys.stderr)
        else:
            tqdm.write(f"{result.input}: {result.label} ({_scores_text(result.scores)})")
    classes = runner.degradation_classes
    counts = {c: sum(r.label == c for r in results) for c in classes}
    failures = sum(r.error is not None for r in results)
    print(f"\n| {' | '.join(classes)} | failed |\n|{'---:|' * (len(classes) + 1)}")
    print(f"| {' | '.join(str(counts[c]) for c in classes)} | {failures} |")
    if args.json:
        rows = [
            {"file": r.input, "label": r.label, "scores": r.scores}
            if r.error is None
            else {"file": r.input, "error": r.error}
            for r in results
        ]
        write_json(args.json, {"model": str(args.model), "runner": dataclasses.asdict(runner.info), "results": rows})
    print(f"analysed {len(paths) - failures} of {len(paths)} image(s)", file=sys.stderr)
    return 1 if failures or empty else 0


def export_folders(names: list[str]) -> list[str]:
    """``names`` with a folder that holds export folders (``baryir export -o OUT`` writes
    OUT/<format>-<precision>/) replaced by those, one level down, in name order."""
    found = []
    for name in names:
        folder = Path(name)
        inside = []
        if folder.is_dir() and not (folder / "manifest.json").exists():
            inside = sorted(str(d) for d in folder.iterdir() if d.is_dir() and (d / "manifest.json").is_file())
        found += inside or [name]
    return list(dict.fromkeys(found))


def cmd_verify(args: argparse.Namespace) -> int:
    from baryir.io.text import one_line
    from baryir.runtimes import load_runner
    from baryir.runtimes.manifest import read_manifest
    from baryir.runtimes.verify import ArtifactCheckError, artifact_folder, check_files, verify_runner

    results = []
    for artifact in export_folders(args.artifacts):  # one bad artifact is one failed row, the others still checked
        try:
            folder = artifact_folder(artifact)
        except ArtifactCheckError:
            print(f"error: {artifact}: not an export folder (needs manifest.json and golden.npz)", file=sys.stderr)
            results.append({"artifact": artifact, "passed": False, "failures": ["not an export folder"]})
            continue
        try:  # the files first: a damaged one is refused before its runtime parses it
            check_files(folder, read_manifest(folder / "manifest.json"))
        except (ArtifactCheckError, ValueError, OSError) as e:
            print(f"error: {artifact}: {one_line(str(e))}", file=sys.stderr)
            results.append({"artifact": artifact, "passed": False, "failures": [one_line(str(e))]})
            continue
        try:
            runner = load_runner(folder, args.backend, args.device, verify=False)
        except (ImportError, ValueError, RuntimeError, OSError) as e:
            print(f"error: {artifact}: cannot run here ({e})", file=sys.stderr)
            results.append({"artifact": artifact, "passed": False, "failures": [f"cannot run here: {e}"]})
            continue
        with runner:
            try:
                results.append(verify_runner(runner, folder))
            except Exception as e:  # whatever the backend raises on this artifact fails its row alone
                ours = isinstance(e, ArtifactCheckError | ValueError | OSError)
                reason = one_line(str(e) if ours else f"{type(e).__name__}: {e}")
                print(f"error: {artifact}: {reason}", file=sys.stderr)
                results.append({"artifact": artifact, "passed": False, "failures": [reason]})
    print("| artifact | backend | device | runs at | PSNR vs PyTorch | max abs | tolerance | result |")
    print("|---|---|---|---|---:|---:|---|---|")
    for r in results:
        if "psnr" not in r:
            print(f"| {r['artifact']} | | | | | | | FAILED: {r['failures'][0]} |")
            continue
        verdict = "pass" if r["passed"] else f"FAILED: {'; '.join(r['failures'])}: {r['cause']}"
        print(
            f"| {r['artifact']} | {r['backend']} | {r['device']} | {r['runs_at']} | {r['psnr']:.1f} "
            f"| {r['max_abs']:.2e} | {', '.join(f'{k} {v:g}' for k, v in r['tolerance'].items())} | {verdict} |"
        )
    if args.json:
        write_json(args.json, results)
    return 0 if all(r["passed"] for r in results) else 1


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export to ONNX, TensorRT, CoreML and OpenVINO, validated against PyTorch",
        description="Export a model to deployable artifacts, one folder per format and precision "
        "(OUT/<format>-<precision>/) with manifest.json and golden.npz. Every artifact is validated against "
        "PyTorch FP32 before it is written (FP32: max abs error <= 1e-4; FP16: >= 40 dB).",
    )
    p.add_argument("--model", default="default", help="shipped name or weights file (default: default)")
    p.add_argument("--format", default="onnx", help=f"comma list of {', '.join(FORMATS)}, or all")
    p.add_argument("--precision", default="fp32", help="comma list of fp32, fp16, int8")
    p.add_argument(
        "--shapes",
        type=sizes,
        default=None,
        help="HxW list: CoreML enumerated sizes and the TensorRT profile (min/max cover them, opt is the first); "
        "default 256x256,480x640,720x1280,1080x1920",
    )
    # Per-format options: None when not given, so that one given without its format is an error;
    # their defaults live in baryir.formats.FORMATS.
    p.add_argument(
        "--coreml-io",
        choices=["image", "tensor"],
        help="CoreML only. image (default): CVPixelBuffer in/out for camera apps; tensor: float MLMultiArray",
    )
    p.add_argument(
        "--coreml-flexible",
        choices=["enumerated", "range"],
        help="CoreML only. enumerated (default) shapes run on the Neural Engine; range shapes fall back to GPU/CPU",
    )
    p.add_argument(
        "--coreml-weights",
        choices=["float", "int8", "pal6", "pal4"],
        help="CoreML only. Weight compression: float (default), int8 linear or 6/4-bit palettes "
        "(smaller app, same speed on the ANE)",
    )
    p.add_argument("--max-batch", type=positive(int), help="TensorRT only. Profile maximum batch (default 1)")
    p.add_argument("--no-validate", action="store_true", help="skip the comparison with PyTorch")
    p.add_argument("--validate-large", action="store_true", help="also validate at 2048x2048 (slow on CPU)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--json", help="write the results (manifests) as JSON here")
    p.set_defaults(func=cmd_export)


def _add_runner_options(p: argparse.ArgumentParser) -> None:
    """What restore and analyze share: the model, where and how it runs, tiling, the check."""
    p.add_argument("--model", default="default", help="default, a checkpoint, or an exported artifact/folder")
    p.add_argument("--backend", default="auto", choices=["auto", *BACKEND_NAMES])
    p.add_argument("--device", help="cpu/cuda (torch), cpu/cuda/tensorrt/coreml (onnxruntime), CPU/GPU/NPU (openvino)")
    p.add_argument(
        "--precision",
        help="fp32/fp16/bf16 where the backend can choose, int8+bf16 for an OpenVINO INT8 IR with its float "
        "parts in bf16 (default: the artifact's)",
    )
    p.add_argument(
        "--tile",
        type=positive(int),
        help="tile size (multiple of 8); default: tile only images whose activations exceed --memory-mb",
    )
    p.add_argument("--memory-mb", type=positive(float), default=1024, help="activation memory budget for auto tiling")
    p.add_argument(
        "--overlap", type=non_negative(int), default=32, help="tile overlap in pixels, feathered (default 32)"
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the artifact's check against its golden.npz at load (done once per artifact and machine)",
    )
    p.add_argument("--no-progress", action="store_true")


def _add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore",
        help="restore image files with any backend",
        description="Restore files, folders and globs (PNG/JPEG/TIFF/BMP/WebP). Outputs keep the input's name and "
        "format, bit depth, alpha and ICC profile; EXIF orientation is applied. Bad inputs are reported and "
        "skipped; the exit code is 1 if any failed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--out", required=True, help="output folder (never the inputs' own files)")
    _add_runner_options(p)
    p.add_argument(
        "--skip-clean",
        action="store_true",
        help="analyse each photo first (encoder only) and copy those read as clean through untouched",
    )
    p.add_argument(
        "--suffix",
        default="",
        type=name_fragment,
        help="append this to each output's name (photo.png -> photo_restored.png with _restored), e.g. to "
        "write into the inputs' own folder; outputs never replace inputs",
    )
    p.add_argument(
        "--image-format",
        "--format",
        dest="format",
        choices=["png", "jpg", "tif", "bmp", "webp"],
        help="write this image format instead of each input's (--format is the older spelling)",
    )
    p.set_defaults(func=cmd_restore)


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="say what is wrong with each photo (clean, noise, rain, haze), with any backend",
        description="Read each photo's degradation from BaryIR's degradation-specific residual: the encoder "
        "and a small readout run, the decoder does not. One line per photo (label and probabilities), a "
        'summary table, and with --json {"results": [{"file", "label", "scores"}, ...]}. Inputs '
        "as for restore; bad inputs are reported and skipped; the exit code is 1 if any failed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    _add_runner_options(p)
    p.add_argument("--json", help="write the results as JSON here")
    p.set_defaults(func=cmd_analyze)


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check exported artifacts on this machine against their golden.npz",
        description="Run each artifact with its own runtime on this machine, compare its output on the "
        "golden input with PyTorch's (golden.npz) and judge it by the tolerance in its manifest. Prints "
        "PSNR and max abs error vs PyTorch; exit 1 if any artifact fails (the line names the likely cause).",
    )
    p.add_argument(
        "artifacts",
        nargs="+",
        metavar="ARTIFACT",
        help="export folders, a folder of them (an export's -o OUT), or a model file inside one",
    )
    p.add_argument("--backend", default="auto", help="run with this backend (default: the artifact's)")
    p.add_argument("--device", help="device for the runtime (default: the artifact's)")
    p.add_argument("--json", help="write the results as JSON here")
    p.set_defaults(func=cmd_verify)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """This group's subcommands."""
    _add_export(sub)
    _add_restore(sub)
    _add_analyze(sub)
    _add_verify(sub)
