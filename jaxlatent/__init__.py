"""jaxlatent: interpretable latent spaces of medical-image generative models, in JAX."""

from jaxlatent.errors import (CheckpointError, ConfigError, DataError, JaxlatentError,
                              TrainingError)
from jaxlatent.generator import Generator, LatentSpec, from_flax

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "Generator", "JaxlatentError",
    "LatentSpec", "TrainingError", "from_flax", "__version__",
]
