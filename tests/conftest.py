"""Shared fixtures: small deterministic models and the copied official facts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


def official_golden_weights() -> dict[str, torch.Tensor]:
    """The deterministic weights described in tests/fixtures/README.md (from the official README)."""
    keys = json.loads((FIXTURES / "barynet_state_dict.json").read_text())["keys"]
    state = {}
    for i, (name, shape) in enumerate(keys):
        t = torch.randn(shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        if name.endswith("temperature"):
            value = 1 + 0.1 * t
        elif len(shape) == 1:
            value = 1 + 0.1 * t if name.endswith("weight") else 0.1 * t
        else:
            value = t / math.sqrt(math.prod(shape[1:]))
        state[name] = value.float()
    return state


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture()
def nano_model():
    from baryir import build_model

    torch.manual_seed(0)
    return build_model("nano").eval()
