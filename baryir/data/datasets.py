"""All-in-one training data: synthetic multi-source from clean photos, or published layouts.

A sample is (degraded patch, clean patch, task id, source id). Sample ``k`` is a pure
function of (seed, k): which image, crop, flip and degradation are all drawn from a
generator seeded by both, so training is deterministic and resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..formats import PAD_MULTIPLE
from .degradations import add_content_condition, add_haze, add_sky, get_task
from .photos import list_images, pair_by_name, read_images

#: Haze strength of ``content_haze``: scene haze that belongs to the picture, milder than
#: the ``dehaze`` task's degradation (beta 0.6-1.8).
CONTENT_HAZE_BETA = (0.1, 0.5)

#: Published training layout: task -> (degraded subfolder, clean subfolder).
PUBLISHED_PAIRS = {
    "derain": ("Derain/rainy", "Derain/gt"),
    "dehaze": ("Dehaze/synthetic", "Dehaze/original"),
    "deblur": ("Deblur/blur", "Deblur/sharp"),
    "lowlight": ("lowlight/low", "lowlight/high"),
}


@dataclass
class Entry:
    """One training image of one task; ``degraded`` is None when synthesised on the fly."""

    task: int
    clean: torch.Tensor
    degraded: torch.Tensor | None = None


def is_published_layout(folder: Path) -> bool:
    """True if ``folder`` looks like the published ``data/Train`` tree."""
    return (folder / "Denoise").is_dir() or any((folder / d).is_dir() for d, _ in PUBLISHED_PAIRS.values())


class AllInOneDataset(Dataset):
    """Random degraded/clean patches over several tasks.

    ``tasks`` are task names (see :data:`degradations.TASKS`). Clean photos from
    ``folders`` feed every synthetic task; a folder in the published layout contributes its
    real pairs for derain/dehaze/deblur/lowlight and its ``Denoise/`` photos for the noise
    tasks. Per-source weights ``lambdas`` are the inverse source frequencies, normalised,
    as in the published trainer.

    ``content_haze`` is the probability that a synthetic sample of a source other than
    ``dehaze`` shows a mildly hazy scene in *both* its input and its target: it teaches the
    model that a rainy or noisy photo of a misty landscape is not a haze task (without it, the
    default model dehazed real Rain100L photos of low-contrast scenes).

    ``content_variety`` is the probability that a synthetic sample's photo first gets one
    :func:`~.degradations.add_content_condition` (soft focus, JPEG, exposure, ...) in both input
    and target: what the model was not trained to remove, it learns to keep.

    ``content_sky`` is the probability that a synthetic sample's photo first gets a cloudy or
    overcast sky (:func:`~.degradations.add_sky`) in both input and target, for every task
    including haze: clouds and bright backlit areas are content, not haze to remove.
    """

    def __init__(
        self,
        folders: list[str | Path],
        tasks: list[str],
        patch_size: int,
        seed: int = 0,
        length: int = 10**9,
        content_haze: float = 0.0,
        content_variety: float = 0.0,
        content_sky: float = 0.0,
    ) -> None:
        if not tasks:
            raise ValueError("no tasks given")
        if patch_size <= 0 or patch_size % PAD_MULTIPLE:
            raise ValueError(f"patch size {patch_size} must be a positive multiple of {PAD_MULTIPLE}")
        self.tasks = [get_task(t) for t in tasks]
        self.sources = sorted({t.source for t in self.tasks}, key=[t.source for t in self.tasks].index)
        self.patch_size, self.seed, self.length = patch_size, seed, length
        self.content_haze, self.content_variety, self.content_sky = content_haze, content_variety, content_sky
        self.entries: list[Entry] = []
        for folder in map(Path, folders):
            self._add_folder(folder, tasks)
        if not self.entries:
            raise ValueError(
                f"no usable training images for tasks {tasks} in {[str(f) for f in folders]} "
                f"(photos smaller than the {patch_size} px patch are skipped: a smaller --patch-size, or larger photos)"
            )
        counts = torch.zeros(len(self.sources))
        for e in self.entries:
            counts[self.source_index(e.task)] += 1
        missing = [s for s, c in zip(self.sources, counts) if c == 0]
        if missing:
            raise ValueError(f"no training images for source(s) {missing}")
        inv = 1 / counts
        self.lambdas = inv / inv.sum()
        self.source_counts = counts

    def source_index(self, task_id: int) -> int:
        return self.sources.index(self.tasks[task_id].source)

    def _add_folder(self, folder: Path, tasks: list[str]) -> None:
        if is_published_layout(folder):
            for i, name in enumerate(tasks):
                key = name.split("_")[0]
                if key == "denoise" and (folder / "Denoise").is_dir():
                    clean, _ = read_images(list_images(folder / "Denoise"), self.patch_size)
                    self.entries += [Entry(i, c) for c in clean]
                elif key in PUBLISHED_PAIRS and (folder / PUBLISHED_PAIRS[key][0]).is_dir():
                    deg_dir, clean_dir = (folder / d for d in PUBLISHED_PAIRS[key])
                    pairs = pair_by_name(list_images(deg_dir), list_images(clean_dir))
                    degraded, kept = read_images([p for p, _ in pairs], self.patch_size)
                    targets = dict(pairs)
                    clean, _ = read_images([targets[p] for p in kept])
                    self.entries += [Entry(i, c, d) for c, d in zip(clean, degraded) if c.shape == d.shape]
            return
        clean, _ = read_images(list_images(folder), self.patch_size)
        self.entries += [Entry(i, c) for i in range(len(tasks)) for c in clean]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        entry = self.entries[int(torch.randint(len(self.entries), (), generator=gen))]
        h, w = entry.clean.shape[-2:]
        p = self.patch_size
        y = int(torch.randint(h - p + 1, (), generator=gen))
        x = int(torch.randint(w - p + 1, (), generator=gen))
        clean = entry.clean[:, y : y + p, x : x + p]
        if entry.degraded is None:
            task = self.tasks[entry.task]
            # no extra random draw when off, so runs without these options replay unchanged
            if self.content_sky > 0 and torch.rand((), generator=gen) < self.content_sky:
                clean = add_sky(clean, gen)
            if self.content_haze > 0 and task.source != "dehaze":
                if torch.rand((), generator=gen) < self.content_haze:
                    clean = add_haze(clean, gen, beta=CONTENT_HAZE_BETA)
            if self.content_variety > 0 and torch.rand((), generator=gen) < self.content_variety:
                clean = add_content_condition(clean, gen)
            degraded = task.degrade(clean, gen)
        else:
            degraded = entry.degraded[:, y : y + p, x : x + p]
        flips = torch.rand(2, generator=gen)
        for dim, flip in zip((-1, -2), flips):
            if flip < 0.5:
                clean, degraded = clean.flip(dim), degraded.flip(dim)
        return degraded.contiguous(), clean.contiguous(), entry.task, self.source_index(entry.task)
