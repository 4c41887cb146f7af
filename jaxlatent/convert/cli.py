"""``python -m jaxlatent.convert <format> FILE --workdir=OUT``: import a network.

  python -m jaxlatent.convert stylegan2-ada network-snapshot-025000.pkl \
    --workdir=runs/ms_stylegan [--network=G_ema]
  python analyze.py --config=configs/analyze_ms.py --workdir=runs/ms_stylegan

  python -m jaxlatent.convert schon-dcgan gan_log/checkpoint.pt --workdir=runs/schon_gan
  python analyze.py --config=configs/analyze_ct.py --workdir=runs/schon_gan

Formats (one subcommand each):
  stylegan2-ada  an official stylegan2-ada-pytorch snapshot (``network-snapshot-*.pkl``),
                 or a generator's state_dict (``.pt``; its architecture is inferred from
                 the tensors, ``--conv-clamp`` gives the one setting they do not record);
                 ``--network`` picks the analysed generator: G_ema (default) or G.
  schon-dcgan    Schön et al.'s GAN ``checkpoint.pt`` (modelG/modelD state_dicts).
  schon-vae      Schön et al.'s VAE ``checkpoint.pt`` or ``decoder.pt`` (see
                 jaxlatent/convert/schon.py).

  python -m jaxlatent.convert export --workdir=runs/dcgan_ct --out=models/dcgan_ct [--step=N]
  python analyze.py --config=configs/analyze_ct.py --workdir=models/dcgan_ct

``export`` writes only what the analysis evaluates (jaxlatent/convert/export.py):
``config.json``, ``generator.npz`` and ``export.json``; ``train.py`` cannot resume it.

The file is read without executing anything it contains (its pickled Python source
and classes are never run; see jaxlatent/convert/pickle_reader.py).  The workdir gets
``config.json``, ``checkpoints/0/`` and ``converted_from.json`` (source path, SHA-256,
init_kwargs); it must not exist yet (or be empty) and appears only once complete.
User errors print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from jaxlatent.errors import ConfigError, exit_on_user_error


class _Parser(argparse.ArgumentParser):
  """argparse whose usage errors become a ConfigError (one ``error:`` line, status 2)."""

  def error(self, message):
    raise ConfigError(f"{message} (see python -m jaxlatent.convert --help)")


def _stylegan2_ada(args: argparse.Namespace) -> str:
  from jaxlatent.convert.stylegan2_ada import convert_stylegan2_ada  # pylint: disable=g-import-not-at-top
  return convert_stylegan2_ada(args.file, args.workdir, network=args.network,
                               conv_clamp=args.conv_clamp, modality=args.modality)


def _clamp(text: str) -> float | None:
  if text.lower() == "none":
    return None
  try:
    return float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _add_stylegan2_ada(p: argparse.ArgumentParser) -> None:
  p.add_argument("--network", default="G_ema", choices=("G_ema", "G"),
                 help="generator to analyse: G_ema (averaged weights) or G")
  p.add_argument("--modality", default="mr", choices=("mr", "ct"),
                 help="images the network was trained on: mr (default; brain T1 slices) or ct")
  p.add_argument("--conv-clamp", type=_clamp, default=256.0,
                 help="conv_clamp of a bare state_dict (.pt), which does not record it: "
                      "the official trainer's 256 (default) or 'none'; snapshots record their own")


def _schon_dcgan(args: argparse.Namespace) -> str:
  from jaxlatent.convert.schon import convert_schon_dcgan  # pylint: disable=g-import-not-at-top
  return convert_schon_dcgan(args.file, args.workdir)


def _schon_vae(args: argparse.Namespace) -> str:
  from jaxlatent.convert.schon import convert_schon_vae  # pylint: disable=g-import-not-at-top
  return convert_schon_vae(args.file, args.workdir)


# The analysis config that fits each format's model.
ANALYZE_CONFIGS = {"stylegan2-ada": "configs/analyze_ms.py",
                   "schon-dcgan": "configs/analyze_ct.py", "schon-vae": "configs/analyze_ct.py"}

# name -> (help, add its own flags, run it -> workdir written)
SUBCOMMANDS: dict[str, tuple[str, Callable, Callable[[argparse.Namespace], str]]] = {
    "stylegan2-ada": ("official stylegan2-ada-pytorch network-snapshot-*.pkl",
                      _add_stylegan2_ada, _stylegan2_ada),
    "schon-dcgan": ("Schön et al.'s DCGAN checkpoint.pt (Latent-Space-Exploration-CT)",
                    lambda p: None, _schon_dcgan),
    "schon-vae": ("Schön et al.'s VAE checkpoint.pt or decoder.pt",
                  lambda p: None, _schon_vae),
}


EXPORT = "export"


def _step(text: str) -> int:
  try:
    step = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a checkpoint step, got {text!r}") from None
  if step < 0:
    raise argparse.ArgumentTypeError(f"expected a step >= 0, got {step}")
  return step


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="python -m jaxlatent.convert",
                   description="Convert a network trained elsewhere into a jaxlatent workdir, "
                               "or export a trained run's generator.")
  sub = parser.add_subparsers(dest="format", metavar="FORMAT", parser_class=_Parser)
  for name, (help_text, add_flags, _) in SUBCOMMANDS.items():
    p = sub.add_parser(name, help=help_text)
    p.add_argument("file", help="the file to convert")
    p.add_argument("--workdir", required=True, help="output workdir (new or empty folder)")
    add_flags(p)
  p = sub.add_parser(EXPORT, help="a train.py workdir's analysed networks as a small folder "
                     "(config.json, generator.npz, export.json) that analyze.py reads")
  p.add_argument("--workdir", required=True, help="the train.py workdir to export")
  p.add_argument("--out", required=True, help="output folder (new or empty)")
  p.add_argument("--step", type=_step, default=None, help="checkpoint step (default: latest)")
  return parser


def _export(args: argparse.Namespace) -> int:
  from jaxlatent.convert.export import export_generator  # pylint: disable=g-import-not-at-top
  out = export_generator(args.workdir, args.out, step=args.step)
  print(f"wrote {out}\nanalyse it with: python analyze.py --config=<analysis config> "
        f"--workdir={out}")
  return 0


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
  """Runs the converter on ``argv`` (without the program name); returns 0."""
  args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
  if args.format is None:
    raise ConfigError(f"no format given: expected one of {sorted(SUBCOMMANDS) + [EXPORT]} "
                      "(see python -m jaxlatent.convert --help)")
  if args.format == EXPORT:
    return _export(args)
  workdir = SUBCOMMANDS[args.format][2](args)
  print(f"wrote {workdir}\nanalyse it with: python analyze.py "
        f"--config={ANALYZE_CONFIGS[args.format]} --workdir={workdir}")
  return 0
