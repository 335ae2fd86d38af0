"""BaryNet, its blocks, the Kantorovich potentials and the named configurations."""

from .barynet import UNUSED_PUBLISHED_PREFIXES, BaryNet
from .configs import CONFIGS, BaryConfig, get_config
from .potentials import Potentials

__all__ = ["BaryNet", "BaryConfig", "CONFIGS", "Potentials", "UNUSED_PUBLISHED_PREFIXES", "get_config"]
