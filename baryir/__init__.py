"""BaryIR: all-in-one image restoration with a learned Wasserstein-barycenter latent space."""

from .checkpoints import build_model, load_model, save_model
from .model import CONFIGS, BaryConfig, BaryNet, Potentials

__all__ = ["BaryNet", "BaryConfig", "CONFIGS", "Potentials", "build_model", "load_model", "save_model"]
__version__ = "0.1.0"
