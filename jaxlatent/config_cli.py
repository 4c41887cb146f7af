"""Config files and command-line overrides, the Flax-examples / big_vision way.

``--config=configs/x.py`` names a Python file with ``get_config()`` returning an
``ml_collections.ConfigDict`` (importing only ``ml_collections`` and other config
files); the driver completes it over the library's defaults, then
``--config.a.b=value`` overrides a field.  Unlike a
bare ``absl.app.run``, problems (missing file, a config file that raises, unknown
key, a value of the wrong type, an unknown flag) become a one-line
:class:`~jaxlatent.errors.ConfigError` naming the flag or key, so the CLIs exit
with status 2 and one clear line.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any, Callable, Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as config_flags_impl

from jaxlatent.errors import ConfigError


def parse_config_flags(
    argv: Sequence[str],
    extra_flags: Sequence[tuple[str, str | None, str]] = (),
    complete: Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict] | None = None,
) -> tuple[ml_collections.ConfigDict, flags.FlagValues]:
  """Parses ``argv`` (incl. program name) into (config, flag values).

  The config file's ``get_config()`` is loaded, completed by ``complete`` (the
  driver's library defaults: a config file lists only its own settings), and only
  then are the ``--config.<key>=...`` overrides applied, so every default field can be
  overridden and an unknown key is named with a did-you-mean.

  Args:
    argv: the full command line, ``sys.argv`` style.
    extra_flags: (name, default, help) string flags to define next to ``--config``,
      e.g. ``("workdir", None, "output directory")``.
    complete: ``config -> config`` filling in the missing fields (may raise
      ConfigError); None keeps the file's config as it is.

  Returns:
    The config (locked: later typos raise) and the parsed FlagValues.

  Raises:
    ConfigError: with a one-line message naming the flag, file or key.
  """
  argv = _last_override_wins(list(argv))
  config_arg = _config_argument(argv)
  if config_arg is None:
    raise ConfigError("no config given: pass --config=configs/<name>.py")
  config = config_from_file(config_arg)  # the file alone first: its own errors, named
  if complete is not None:
    config = complete(config)
  rest = _without_config_argument(argv)
  fv = flags.FlagValues()
  # sys_argv: the overrides are read from THIS argv, not from sys.argv (so the
  # function also works in-process, e.g. in tests).
  for name, default, help_string in extra_flags:
    define = flags.DEFINE_boolean if isinstance(default, bool) else flags.DEFINE_string
    define(name, default, help_string, flag_values=fv)
  try:
    # Defining the flag already registers (and checks) the overrides named in ``rest``.
    config_flags.DEFINE_config_dict(
        "config", config, "the config file's settings over the defaults", flag_values=fv,
        lock_config=True, sys_argv=rest)
    fv(rest)
    config = fv["config"].value
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(_explain(e, rest, config)) from None
  return config, fv


def config_from_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """``get_config()`` of the config file ``path`` (``configs/x.py`` or ``x.py:arg``), unlocked.

  The file's repository (the parent of its folder) is put on ``sys.path`` so that
  configs doing ``from configs import common`` load from any working directory.

  Raises:
    ConfigError: the file is missing, fails to load, or ``get_config()`` returns None.
  """
  config_arg = os.fspath(path)
  file_path = config_arg.split(":", 1)[0]
  if not os.path.isfile(file_path):
    raise ConfigError(f"config file {file_path!r} does not exist")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(file_path)))
  if repo not in sys.path:
    sys.path.insert(0, repo)  # first: its configs/ package, not another one installed
  config = _load_config_file(config_arg)
  if config is None:
    raise ConfigError(f"config file {file_path!r}: get_config() returned None")
  return config


def over_defaults(defaults: ml_collections.ConfigDict,
                  config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config``'s fields written over ``defaults`` (changed in place and returned).

  Nested ConfigDicts merge field by field, so a config that omits fields (an older
  config, a partial one in a test) gets the defaults for them; values replace the
  default whatever their type.
  """
  for k in config.keys():
    v = config[k]
    if isinstance(v, ml_collections.ConfigDict) and isinstance(defaults.get(k),
                                                                ml_collections.ConfigDict):
      over_defaults(defaults[k], v)
    elif isinstance(v, ml_collections.ConfigDict):
      defaults[k] = ml_collections.ConfigDict(v.to_dict())
    else:
      with defaults.ignore_type():
        defaults[k] = v
  return defaults


def _config_argument(argv: Sequence[str]) -> str | None:
  """The value of ``--config=...`` / ``--config ...`` in ``argv`` (the last one wins)."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      value = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _without_config_argument(argv: Sequence[str]) -> list[str]:
  """``argv`` without ``--config=...`` / ``--config ...`` (the file is loaded already)."""
  out, skip = [argv[0]], False
  for i, arg in enumerate(argv[1:], 1):
    if skip:
      skip = False
    elif arg.startswith("--config="):
      continue
    elif arg == "--config":
      skip = i + 1 < len(argv)
    else:
      out.append(arg)
  return out


def _last_override_wins(argv: list[str]) -> list[str]:
  """Drops all but the last ``--config.<key>=`` of each key: a repeated override replaces
  the earlier one (absl would concatenate repeated tuple values)."""
  key = lambda a: a[len("--config."):].split("=", 1)[0] if (  # noqa: E731
      a.startswith("--config.") and "=" in a) else None
  last = {key(a): i for i, a in enumerate(argv) if key(a) is not None}
  return [a for i, a in enumerate(argv) if key(a) is None or last[key(a)] == i]


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def _overrides(argv: Sequence[str]) -> list[tuple[str, str]]:
  """(dotted key, the argument) of every ``--config.<key>=...`` in ``argv``."""
  out = []
  for arg in argv[1:]:
    if arg.startswith("--config."):
      out.append((arg[len("--config."):].split("=", 1)[0], arg))
  return out


def _unknown_key(config: Any, dotted: str) -> str | None:
  """A message if ``dotted`` is not a field of ``config``; None if it is."""
  node, walked = config, []
  for part in dotted.split("."):
    keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else None
    if keys is None:
      return None  # below a leaf (e.g. a tuple index): let the flag parser judge
    if part not in keys:
      where = f"config.{'.'.join(walked)}" if walked else "the config"
      close = difflib.get_close_matches(part, keys, n=1)
      hint = f"; did you mean {'.'.join(walked + close)!r}?" if close else ""
      return f"unknown config key {'.'.join(walked + [part])!r} ({where} has no field " \
             f"{part!r}{hint})"
    node, walked = node[part], walked + [part]
  return None


def _load_config_file(config_arg: str) -> Any:
  """Runs ``get_config`` of the file (unlocked); ConfigError if the file itself fails."""
  try:
    return config_flags_impl.ConfigFileFlagParser("config", lock_config=False).parse(config_arg)
  except Exception as e:  # pylint: disable=broad-except
    msg = str(e)
    if "Error whilst parsing config file" in msg or "Failed loading config file" in msg:
      msg = [ln for ln in msg.strip().splitlines() if ln.strip()][-1]
    else:
      msg = f"{type(e).__name__}: {msg}"
    raise ConfigError(f"config file {config_arg!r} failed to load: {_one_line(msg)}") from None


def _explain(e: Exception, argv: Sequence[str], config: Any) -> str:
  """Turns an absl/ml_collections parsing error into one line naming the culprit."""
  msg = str(e)
  if "Unknown command line flag" in msg:
    return f"unknown flag: {_one_line(msg)}"
  for dotted, arg in _overrides(argv):
    problem = _unknown_key(config, dotted)
    if problem:
      return f"{arg}: {problem}"
  applied = " ".join(arg for _, arg in _overrides(argv)) or " ".join(argv[1:])
  return f"cannot apply {applied}: {_one_line(msg)}"
