"""User-facing errors.

Every problem a user can cause (a bad file, a bad config value, a missing
checkpoint) is raised as a :class:`JaxlatentError` subclass whose message names
the file or key and the problem.  The command-line entry points catch these, print
``error: <message>`` and exit with status 2, instead of showing a traceback from
deep inside jax or nibabel.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable


class JaxlatentError(Exception):
  """Base class of errors caused by user input; the message is shown as is."""


class DataError(JaxlatentError):
  """A data file (NIfTI, mask, labels CSV, cache) is missing or invalid."""


class ConfigError(JaxlatentError):
  """A configuration value or command-line flag is invalid."""


class CheckpointError(JaxlatentError):
  """A checkpoint is missing, incomplete or does not match the model."""


class TrainingError(JaxlatentError):
  """Training cannot go on (e.g. a non-finite loss)."""


EXIT_USER_ERROR = 2


def exit_on_user_error(main: Callable[..., int | None]) -> Callable[..., int | None]:
  """Decorates a CLI ``main`` so that a JaxlatentError prints one line and exits 2."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except JaxlatentError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(EXIT_USER_ERROR)

  return wrapped
