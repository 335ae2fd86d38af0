"""BaryNet, its blocks, the Kantorovich potentials and the named configurations."""

from .barynet import UNUSED_PUBLISHED_PREFIXES, BaryNet
from .configs import CONFIGS, BaryConfig, get_config
from .potentials import Potentials
from .readout import DEGRADATION_CLASSES, DegradationReadout

__all__ = [
    "BaryNet",
    "BaryConfig",
    "CONFIGS",
    "DEGRADATION_CLASSES",
    "DegradationReadout",
    "Potentials",
    "UNUSED_PUBLISHED_PREFIXES",
    "get_config",
]
