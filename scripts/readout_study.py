"""Which representation tells degradations apart? (issue #32, docs/model.md)

Fits the same readout (pooled channel statistics + multinomial logistic regression,
baryir.analysis) on BaryIR's residual (source - barycenter), on the encoder's source latent
without the decomposition, on the barycenter latent, on the encoder's skips, and on plain image
statistics, each pooled as mean and deviation and with the neighbour differences as well; all on
crops of the training photos with the fitting generators. Tests on photos from another collection
(CBSD68) with seen and held-out generators, on Rain100L_sample (real test pairs: rain inputs and
clean targets), and reports what unseen degradations (JPEG, blur, low light) read as.

    python scripts/readout_study.py --fit data/train/* --clean data/test/CBSD68 \
        --rain-pairs data/test/Rain100L_sample/input data/test/Rain100L_sample/target \
        --md docs/readout_study.md --json readout_study.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from baryir.analysis import FIT_TASKS, Sample, collect, fit_linear, fitting_samples, label_ids, latent_features
from baryir.checkpoints import load_model
from baryir.data.degradations import degrade
from baryir.data.photos import list_images, read_images
from baryir.evaluate import image_seed
from baryir.model import DEGRADATION_CLASSES
from baryir.model.readout import DEFAULT_LATENTS, STATISTICS, VERSION1_STATISTICS, weights_digest

#: The representations compared: name -> (the latents it concatenates, the statistics pooled from
#: each); "image" is plain image statistics.
MEAN_STD, ALL = VERSION1_STATISTICS, STATISTICS
REPRESENTATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "residual (source - barycenter)": (("residual",), MEAN_STD),
    "source latent (no decomposition)": (("source",), MEAN_STD),
    "barycenter latent": (("bary",), MEAN_STD),
    "encoder skips 1/2, 1/4": (DEFAULT_LATENTS, MEAN_STD),
    "encoder skips 1, 1/2, 1/4": (("enc1", "enc2", "enc3"), MEAN_STD),
    "skips 1/2, 1/4 + image statistics": ((*DEFAULT_LATENTS, "image"), MEAN_STD),
    "image statistics": (("image",), MEAN_STD),
    "residual, + neighbour differences": (("residual",), ALL),
    "source latent, + neighbour differences": (("source",), ALL),
    "encoder skips 1/2, 1/4, + neighbour differences (shipped)": (DEFAULT_LATENTS, ALL),
    "encoder skips 1, 1/2, 1/4, + neighbour differences": (("enc1", "enc2", "enc3"), ALL),
    "skips 1/2, 1/4 + residual, + neighbour differences": ((*DEFAULT_LATENTS, "residual"), ALL),
}

#: CBSD68 test variants: task -> (class, generator seen in fitting?)
TEST_TASKS = {
    "identity": ("clean", True),
    "denoise_15": ("noise", True),
    "denoise_25": ("noise", True),
    "denoise_50": ("noise", True),
    "derain": ("rain", True),
    "derain_ps": ("rain", True),
    "derain_mix": ("rain", False),
    "dehaze": ("haze", True),
    "dehaze_mix": ("haze", False),
}
#: Degradations outside the four classes: reported as what they read as.
UNSEEN = ("jpeg", "deblur", "lowlight")


def image_statistics(x: torch.Tensor) -> torch.Tensor:
    """Plain statistics of a (3, H, W) image: colour moments, saturation, dark channel, contrast,
    gradient energy by direction and at two scales (no learned features)."""
    luma = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None, None]
    gx, gy = luma.diff(dim=3).abs(), luma.diff(dim=2).abs()
    lap = F.conv2d(luma, torch.tensor([[[[0, 1, 0], [1, -4, 1], [0, 1, 0]]]], dtype=x.dtype)).abs()
    small = F.avg_pool2d(luma, 2)
    lap2 = F.conv2d(small, torch.tensor([[[[0, 1, 0], [1, -4, 1], [0, 1, 0]]]], dtype=x.dtype)).abs()
    sat = x.amax(0) - x.amin(0)
    dark = -F.max_pool2d(-x.amin(0)[None, None], 15, stride=1, padding=7)
    q = torch.quantile(luma.flatten()[::7], torch.tensor([0.02, 0.5, 0.98]))
    feats = [
        *x.mean((1, 2)),
        *x.std((1, 2)),
        sat.mean(),
        sat.std(),
        dark.mean(),
        q[2] - q[0],
        q[1],
        gx.mean().log(),
        gy.mean().log(),
        (gy.mean() / gx.mean()).log(),
        lap.mean().log(),
        lap2.mean().log(),
        (lap.mean() / lap2.mean()).log(),
        lap.flatten().median().add(1e-6).log(),
    ]
    return torch.stack([torch.as_tensor(f, dtype=torch.float32) for f in feats])


def test_samples(clean_dir: Path, rain_pairs: tuple[Path, Path] | None) -> list[tuple[Sample, str, bool]]:
    """(sample, test set, generator seen in fitting) for every test image."""
    photos, paths = read_images(list_images(clean_dir))
    out = []
    for task, (label, seen) in {**TEST_TASKS, **{t: ("?", False) for t in UNSEEN}}.items():
        for img, p in zip(photos, paths):
            x = img if task == "identity" else degrade(img, task, image_seed(task, p.name)).clamp(0, 1)
            out.append((Sample(x, label, task), f"{clean_dir.name} {task}", seen))
    if rain_pairs:
        for folder, label in zip(rain_pairs, ("rain", "clean")):
            imgs, _ = read_images(list_images(folder))
            out += [(Sample(x, label, "real"), f"{folder.parent.name} {folder.name}", False) for x in imgs]
    return out


def pooled(features: torch.Tensor, statistics: tuple[str, ...]) -> torch.Tensor:
    """The blocks of ``statistics`` from a latent's features pooled with every one of :data:`ALL`."""
    blocks = dict(zip(ALL, features.chunk(len(ALL), dim=1)))
    return torch.cat([blocks[s] for s in statistics], 1)


def by_representation(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The compared representations' features from the per-latent ones."""
    return {
        name: torch.cat([features[n] if n == "image" else pooled(features[n], stats) for n in latents], 1)
        for name, (latents, stats) in REPRESENTATIONS.items()
    }


def confusion(pred: torch.Tensor, labels: torch.Tensor, k: int) -> list[list[int]]:
    m = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(labels.tolist(), pred.tolist()):
        m[t, p] += 1
    return m.tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--fit", nargs="+", required=True, help="folders of clean training photos")
    ap.add_argument("--clean", type=Path, required=True, help="clean test photos from another collection")
    ap.add_argument("--rain-pairs", nargs=2, type=Path, metavar=("INPUT", "TARGET"))
    ap.add_argument("--per-task", type=int, default=200)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--l2", type=float, default=1e-2, help="L2 penalty of the fit (baryir.analysis default 1e-2)")
    ap.add_argument("--features", type=Path, help="cache of the encoded features: written once, read by later runs")
    ap.add_argument("--md", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_model(args.model)
    latents = latent_features(model, ALL)

    def featurize(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**latents(x), "image": image_statistics(x)}

    t0 = time.time()
    fit = list(fitting_samples(args.fit, args.per_task, args.size))
    fit_labels = label_ids(fit)
    tests = test_samples(args.clean, tuple(args.rain_pairs) if args.rain_pairs else None)
    # what the features depend on (not the fit's penalty or the report files): the arguments, the
    # fitting generators and the weights
    arguments = json.dumps(
        {
            **{k: v for k, v in vars(args).items() if k not in ("features", "l2", "md", "json")},
            "fit_tasks": FIT_TASKS,
            "statistics": ALL,
            "weights": weights_digest(model.state_dict()),
        },
        default=str,
    )
    if args.features and args.features.exists():  # features of an earlier run of the same arguments
        cached = torch.load(args.features, weights_only=True)
        if cached["arguments"] != arguments:
            raise SystemExit(f"{args.features} holds features of other arguments; remove it or pass another file")
        raw_fit, raw_test = cached["fit"], cached["test"]
    else:
        raw_fit, raw_test = collect(fit, featurize), collect([s for s, _, _ in tests], featurize)
        if args.features:
            torch.save({"arguments": arguments, "fit": raw_fit, "test": raw_test}, args.features)
    fit_feats, test_feats = by_representation(raw_fit), by_representation(raw_test)
    labelled = torch.tensor([s.label != "?" for s, _, _ in tests])
    test_labels = torch.tensor([DEGRADATION_CLASSES.index(s.label) if s.label != "?" else -1 for s, _, _ in tests])
    held_out = torch.tensor([not seen for _, _, seen in tests]) & labelled
    k = len(DEGRADATION_CLASSES)
    results = {}
    for name, feats in fit_feats.items():
        w, b = fit_linear(feats, fit_labels, k, l2=args.l2)
        pred = (test_feats[name] @ w.T + b).argmax(1)
        ok = pred == test_labels
        row = {
            "features": feats.shape[1],
            "fit_accuracy": float(((feats @ w.T + b).argmax(1) == fit_labels).double().mean()),
            "accuracy": float(ok[labelled].double().mean()),
            "held_out_accuracy": float(ok[held_out].double().mean()),
            "per_class": {
                c: float(ok[labelled & (test_labels == i)].double().mean()) for i, c in enumerate(DEGRADATION_CLASSES)
            },
            "confusion": confusion(pred[labelled], test_labels[labelled], k),
            "per_set": {},
        }
        for s in dict.fromkeys(n for _, n, _ in tests):
            mask = torch.tensor([n == s for _, n, _ in tests])
            reads = torch.bincount(pred[mask], minlength=k).tolist()
            row["per_set"][s] = {"reads_as": dict(zip(DEGRADATION_CLASSES, reads)), "n": int(mask.sum())}
        results[name] = row
    report = {
        "model": args.model,
        "fit": {
            "samples": len(fit),
            "l2": args.l2,
            "crop": args.size,
            "tasks": FIT_TASKS,
            "folders": [Path(f).name for f in args.fit],
        },
        "test_images": len(tests),
        "seconds": round(time.time() - t0, 1),
        "results": results,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    args.md.write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    res = report["results"]
    lines = [
        "| representation | features | accuracy | held-out generators / real | "
        + " | ".join(DEGRADATION_CLASSES)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(DEGRADATION_CLASSES),
    ]
    for name, r in res.items():
        per = " | ".join(f"{r['per_class'][c]:.3f}" for c in DEGRADATION_CLASSES)
        lines.append(f"| {name} | {r['features']} | {r['accuracy']:.3f} | {r['held_out_accuracy']:.3f} | {per} |")
    for name, r in res.items():
        lines += [
            "",
            f"**{name}**: what each test set reads as",
            "",
            "| set | n | " + " | ".join(DEGRADATION_CLASSES) + " |",
        ]
        lines.append("|---|---:|" + "---:|" * len(DEGRADATION_CLASSES))
        for s, v in r["per_set"].items():
            lines.append(f"| {s} | {v['n']} | " + " | ".join(str(v["reads_as"][c]) for c in DEGRADATION_CLASSES) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
