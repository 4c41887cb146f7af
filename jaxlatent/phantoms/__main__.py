"""Command line: write a phantom population as NIfTI + labels.csv, or a preview PNG.

  python -m jaxlatent.phantoms --kind brain --subjects 40 --out data/brain \\
      [--size 64 --slices 32 --seed 0 --ms-fraction 0.5] [--preview out.png] [--overwrite]

An existing non-empty --out folder is refused unless --overwrite, which replaces it
as a whole once the new data set is complete (an interrupted run keeps the old one).
"""

from __future__ import annotations

import argparse
import sys

from jaxlatent.errors import ConfigError, exit_on_user_error


def _number(name: str, cast):
  """argparse type that reports a bad number as a one-line ConfigError."""

  def parse(text: str):
    try:
      return cast(text)
    except ValueError:
      raise ConfigError(f"--{name}={text!r} is not a valid {cast.__name__}") from None

  return parse


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m jaxlatent.phantoms", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--kind", required=True, help="'brain' (T1 MR, HC/MS) or 'thorax' (CT)")
  p.add_argument("--subjects", type=_number("subjects", int), default=40,
                 help="number of subjects (volumes)")
  p.add_argument("--out", default=None, help="output folder for sub-XXX.nii.gz + labels.csv")
  p.add_argument("--size", type=_number("size", int), default=64,
                 help="in-plane size in pixels")
  p.add_argument("--slices", type=_number("slices", int), default=32,
                 help="axial slices per volume")
  p.add_argument("--seed", type=_number("seed", int), default=0,
                 help="population / rendering seed")
  p.add_argument("--ms-fraction", type=_number("ms-fraction", float), default=0.5,
                 help="brain: fraction of MS subjects; thorax: fraction of women")
  p.add_argument("--overwrite", action="store_true",
                 help="replace an existing non-empty --out folder (swapped in when complete)")
  p.add_argument("--preview", default=None, help="also write a PNG grid of sample slices")
  return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> int:
  args = parse_args(argv)  # bad numbers raise ConfigError (one line, exit 2)
  from jaxlatent.phantoms import io, rendering  # after parsing: --help stays fast

  rendering.check_kind(args.kind)
  if args.subjects < 1:
    raise ConfigError(f"--subjects={args.subjects} must be at least 1")
  if args.size < 1:
    raise ConfigError(f"--size={args.size} must be a positive integer")
  if args.slices < 1:
    raise ConfigError(f"--slices={args.slices} must be a positive integer")
  if not 0.0 <= args.ms_fraction <= 1.0:
    raise ConfigError(f"--ms-fraction={args.ms_fraction} must be in [0, 1]")
  if args.out is None and args.preview is None:
    raise ConfigError("give --out (NIfTI data set) and/or --preview (PNG)")
  if args.out is not None:
    paths = io.write_dataset(args.kind, args.subjects, args.out, size=args.size,
                             n_slices=args.slices, seed=args.seed, ms_fraction=args.ms_fraction,
                             overwrite=args.overwrite)
    print(f"wrote {len(paths)} {args.kind} volumes (+ masks, labels.csv) to {args.out}")
  if args.preview is not None:
    io.write_preview(args.kind, args.preview, size=args.size, seed=args.seed,
                     ms_fraction=args.ms_fraction)
    print(f"wrote preview {args.preview}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
