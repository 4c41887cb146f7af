"""Optimizer settings (``config.optim``): the papers' defaults and the Adam they build.

``config.optim`` holds ``lr, b1, b2, eps, grad_clip`` and optional per-network
learning rates ``g_lr``, ``d_lr``, ``aux_lr`` that override ``lr`` for that network.
"""

from __future__ import annotations

import ml_collections
import optax

from jaxlatent.errors import ConfigError
from jaxlatent.models import ALL_MODEL_NAMES

# Adam (lr, b1, b2, eps) per model.
_ADAM = {
    "dcgan": (2e-4, 0.5, 0.999, 1e-8),  # Radford et al.; Schön et al.
    "vae": (1e-4, 0.9, 0.999, 1e-8),  # Schön et al., Training/TrainVAE.py
    "stylegan2": (2.5e-3, 0.0, 0.99, 1e-8),  # stylegan2-ada, small resolutions
    "stylegan2_simple": (2.5e-3, 0.0, 0.99, 1e-8),
    "ifcvae_gan": (2e-4, 0.5, 0.999, 1e-8),  # GAN-style, as the DCGAN
    "ssdaae": (2e-4, 0.5, 0.999, 1e-8),
}


def default_optim_config(name: str) -> ml_collections.ConfigDict:
  """The paper's optimizer settings (``config.optim``) for model ``name``."""
  if name not in ALL_MODEL_NAMES:
    raise ConfigError(f"model.name={name!r}: expected one of {ALL_MODEL_NAMES}")
  o = ml_collections.ConfigDict()
  o.lr, o.b1, o.b2, o.eps = _ADAM[name]
  o.grad_clip = 0.0  # global-norm clipping; 0 = off
  return o


def adam_settings(config: ml_collections.ConfigDict, which: str | None = None
                  ) -> dict[str, float]:
  """Adam settings from ``config.optim`` over the model's defaults.

  ``which`` ('g' | 'd' | 'aux') lets ``optim.<which>_lr`` override ``optim.lr``.
  """
  settings = default_optim_config(config.model.name).to_dict()
  user = config.get("optim", None)
  if user is not None:
    for k in ("lr", "b1", "b2", "eps", "grad_clip"):
      if k in user and user[k] is not None:
        settings[k] = float(user[k])
    if which is not None and f"{which}_lr" in user and user[f"{which}_lr"] is not None:
      settings["lr"] = float(user[f"{which}_lr"])
  if settings["lr"] <= 0:
    raise ConfigError(f"optim.lr={settings['lr']}: must be > 0")
  return settings


def adam(settings: dict[str, float], ratio: float = 1.0) -> optax.GradientTransformation:
  """Adam from ``settings``; ``ratio`` = c/(c+1) rescales lr and betas (lazy regularisation)."""
  tx = optax.adam(settings["lr"] * ratio, b1=settings["b1"]**ratio, b2=settings["b2"]**ratio,
                  eps=settings["eps"])
  if settings.get("grad_clip", 0.0) > 0:
    tx = optax.chain(optax.clip_by_global_norm(settings["grad_clip"]), tx)
  return tx


def make_optimizer(config: ml_collections.ConfigDict, which: str | None = None,
                   ratio: float = 1.0) -> optax.GradientTransformation:
  """:func:`adam` of :func:`adam_settings` (``which`` network, lazy-regularisation ``ratio``)."""
  return adam(adam_settings(config, which), ratio)


def apply_gradients(tx: optax.GradientTransformation, params, opt_state, grads):
  """One optimizer update: ``(params, opt_state)`` after ``grads``."""
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state
