"""Config files and command-line overrides, the Flax-examples / big_vision way.

``--config=configs/x.py`` names a Python file with ``get_config()`` returning an
``ml_collections.ConfigDict``; ``--config.a.b=value`` overrides a field.  Unlike a
bare ``absl.app.run``, problems (missing file, unknown key, a value of the wrong
type) become a :class:`~jaxlatent.errors.ConfigError` naming the flag, so the CLIs
exit with status 2 and one clear line.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags

from jaxlatent.errors import ConfigError


def parse_config_flags(
    argv: Sequence[str],
    extra_flags: Sequence[tuple[str, str | None, str]] = (),
) -> tuple[ml_collections.ConfigDict, flags.FlagValues]:
  """Parses ``argv`` (incl. program name) into (config, flag values).

  Args:
    argv: the full command line, ``sys.argv`` style.
    extra_flags: (name, default, help) string flags to define next to ``--config``,
      e.g. ``("workdir", None, "output directory")``.

  Returns:
    The config (locked: later typos raise) and the parsed FlagValues.
  """
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
      "config", None, "path to a config file in configs/", flag_values=fv, lock_config=True)
  for name, default, help_string in extra_flags:
    flags.DEFINE_string(name, default, help_string, flag_values=fv)
  for arg in argv[1:]:
    if arg.startswith("--config=") or arg.startswith("--config "):
      path = arg.split("=", 1)[1].split(":", 1)[0]
      if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
  try:
    fv(list(argv))
  except flags.Error as e:
    raise ConfigError(_explain_flag_error(e)) from None
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    raise ConfigError(f"bad config override: {e}") from None
  if fv["config"].value is None:
    raise ConfigError("no config given: pass --config=configs/<name>.py")
  return fv["config"].value, fv


def _explain_flag_error(e: Exception) -> str:
  msg = str(e)
  if "does not exist" in msg or "Unknown command line flag" in msg or "not found" in msg:
    return f"unknown config key or flag: {msg}"
  return msg
