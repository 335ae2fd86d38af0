"""The task names ``--tasks`` accepts and the paper's two task mixes (torch-free: the CLI's
parser needs them where PyTorch is not installed); the degradations are in ``degradations.py``."""

from __future__ import annotations

TASK_NAMES = (
    "denoise_15",
    "denoise_25",
    "denoise_50",
    "denoise",
    "derain",
    "derain_heavy",
    "derain_mix",
    "derain_ps",
    "dehaze",
    "dehaze_mix",
    "deblur",
    "lowlight",
    "jpeg",
    "identity",
)
#: The paper's two settings.
THREE_TASK = ("denoise_15", "denoise_25", "denoise_50", "derain", "dehaze")
#: The three tasks with rain and haze from several generators (``derain_mix``, ``dehaze_mix``).
THREE_TASK_VARIED = ("denoise_15", "denoise_25", "denoise_50", "derain_mix", "dehaze_mix")
#: The shipped default's mix: the three tasks with rain from the published sets' recipe and
#: from the varied generators, both haze generators, and clean photos kept as they are.
THREE_TASK_SAFE = (
    "denoise_15",
    "denoise_25",
    "denoise_50",
    "derain_ps",
    "derain_mix",
    "dehaze",
    "dehaze_mix",
    "identity",
)
FIVE_TASK = ("derain", "dehaze", "denoise_25", "deblur", "lowlight")
