"""Every study's config fields at their library defaults, completion and config-only checks.

A config file (configs/analyze_*.py, discover_*.py, compare_edits*.py,
label_fraction_*.py) lists only its paper's settings; ``analyze.py`` passes
:func:`complete_study_config` to ``jaxlatent.config_cli.parse_config_flags``, which
completes the file's config over these defaults before the command-line overrides.
The ``task`` field picks the study: none = the analysis of one run
(:mod:`jaxlatent.studies.analysis`), 'compare_edits'
(:mod:`jaxlatent.studies.edit_comparison`), 'label_fraction'
(:mod:`jaxlatent.studies.label_fraction`: a training config, completed over the
training defaults).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxlatent import phantoms
from jaxlatent.config_cli import over_defaults
from jaxlatent.directions.supervised import CLASSIFIERS
from jaxlatent.directions.voynov import VoynovConfig
from jaxlatent.errors import ConfigError
from jaxlatent.inversion.batched import default_inversion_config
from jaxlatent.training.defaults import complete_train_config

# How InterFaceGAN's held-out split is drawn: whole subjects (the boundary's held-out
# accuracy is then on subjects it never saw) or single codes (the reference's random
# split over samples; slices of one subject land on both sides).
HELD_OUT_SPLITS = ("subjects", "codes")
UNSUPERVISED = ("voynov", "sefa", "ganspace")
SUPERVISED = ("interfacegan",)
METHODS = UNSUPERVISED + SUPERVISED
SPACES = ("z", "w", "w+")
TASKS = ("analysis", "compare_edits", "label_fraction")

KINDS = ("brain", "thorax")
# Config fields naming train workdirs, per kind: field -> (accepted model.name, role).
MODEL_FIELDS = {
    "brain": {"ifcvae_gan": ("ifcvae_gan", "encoder"), "ssdaae": ("ssdaae", "encoder"),
              "stylegan": ("stylegan2", "inverted")},
    "thorax": {"ifcvae_gan": ("ifcvae_gan", "encoder"), "dcgan": ("dcgan", "inverted")},
}
# Direction-file fields of the inverted models and analyze.py's default file under the
# model's workdir (run_analysis writes <workdir>/report/directions/<method>_directions).
DIRECTION_FIELDS = {("brain", "stylegan"): ("stylegan_directions", "interfacegan"),
                    ("thorax", "dcgan"): ("dcgan_directions", "voynov")}
# Attribute-model labels an edit can use: (kind, data.label_column) -> (class id of the
# subjects' class, class id to edit towards, description).  Class ids as the data
# pipeline assigns them (SliceDataset.label_ids): string labels -> index in the sorted
# class names (HC 0 / MS 1; F 0 / M 1), boolean labels -> their value (large_breast 1).
EDIT_LABELS = {
    ("brain", "group"): (0, 1, "group HC (0) -> MS (1)"),
    ("thorax", "large_breast"): (0, 1, "large_breast False (0) -> True (1)"),
    ("thorax", "group"): (1, 0, "group M (1) -> F (0)"),
}



# ----------------------------------------------------------------------------- analysis


def default_analysis_config() -> ml_collections.ConfigDict:
  """Every field ``run_analysis`` reads, at neutral defaults (configs/analyze_*.py adjust).

  Fields:
    seed: base PRNG seed of the analysis (discovery, inversion, alignment).
    space: latent space analysed: 'z' (DCGAN, VAE, StyleGAN z) or 'w' / 'w+' (StyleGAN).
    methods: any of voynov, sefa, ganspace (unsupervised) and interfacegan (supervised,
      needs labelled images: ``supervised.label_column``).
    restarts, voynov, ganspace_*, sefa_components: discovery settings (as
      configs/discover_ct.py; ``voynov`` = ``jaxlatent.directions.VoynovConfig`` fields).
    traversal_shifts: columns of the traversal grids (Schön et al.: +-6, +-18).
    alignment: factor alignment on phantoms (regressor size and steps, shifts, naming
      threshold); skipped for real data.
    images: which images are inverted.  source 'heldout': the training phantom
      population re-drawn with ``data.seed + seed_offset`` (subjects never seen in
      training); 'nifti' / 'dicom': ``path`` (glob/folder) through the training run's
      preprocessing, ``labels_csv`` for labels.  max_subjects: first N subjects (0: all).
    inversion: ``jaxlatent.inversion.default_inversion_config()`` fields, read by
      ``jaxlatent.inversion.make_inverter``; StyleGAN: the projector (lr warm-up/ramp-down,
      MSE + ssim_weight * MS-SSIM, no noise optimisation so a code alone renders its
      image); VAE: encoder mean + vae_refine_steps; batch_size images per call.
    traversal: the eigen-analysis schedule alpha_start..alpha_stop in alpha_num steps,
      how many directions per method (directions_per_method) and subjects
      (max_subjects, 0: all) are analysed, covariance centring, kept components.
    supervised: InterFaceGAN (label column, negative / positive class, classifier and
      the SVM's C, or the class-mean difference: ``classifier='mean_difference'``; the
      held-out fraction ``val_fraction`` of whole subjects, ``held_out='subjects'``,
      or of single codes, ``'codes'``) and the alpha unit: one alpha unit =
      (class-mean separation along the normal) / alpha_per_separation.
    ground_truth: brain phantoms only: held-out healthy subjects rendered before and
      after the mean HC -> MS factor change (true difference maps).
    report: sample-grid size, rows of the traversal grids, GIF speed;
      scrubber_slices: slices per subject on each direction's scrubber page (0: no pages).
    cache_mismatch: what to do with a saved stage in the output folder (directions,
      inverted codes, factor alignment) whose fingerprint (generator checkpoint step,
      config and parameter hashes, producing settings) differs from this run's:
      'recompute' it (one log line says why) or stop with an 'error'.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.cache_mismatch = "recompute"
  c.space = "z"
  c.methods = ("voynov", "sefa", "ganspace")
  c.restarts = 1
  c.voynov = ml_collections.ConfigDict(
      {k: v for k, v in dataclasses.asdict(VoynovConfig()).items() if k != "collapse_threshold"})
  c.voynov.collapse_threshold = ml_collections.FieldReference(None, field_type=float)
  c.ganspace_components = 80
  c.ganspace_samples = 10_000
  c.sefa_components = 32
  c.traversal_shifts = (-18.0, -6.0, 0.0, 6.0, 18.0)

  c.alignment = ml_collections.ConfigDict()
  c.alignment.enabled = True
  c.alignment.regressor_images = 2048
  c.alignment.regressor_steps = 1000
  c.alignment.num_latents = 8
  c.alignment.shifts = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)
  c.alignment.threshold = 0.5

  c.images = ml_collections.ConfigDict()
  c.images.source = "heldout"  # heldout | nifti | dicom
  c.images.path = ""
  c.images.labels_csv = ""
  c.images.seed_offset = 1000
  c.images.num_images = 64
  c.images.max_subjects = 4

  c.inversion = default_inversion_config()

  c.traversal = ml_collections.ConfigDict()
  c.traversal.alpha_start = 0.0
  c.traversal.alpha_stop = 18.0
  c.traversal.alpha_num = 15
  c.traversal.directions_per_method = 3
  c.traversal.max_subjects = 4
  c.traversal.center = "voxels"
  c.traversal.n_components = 4

  c.supervised = ml_collections.ConfigDict()
  c.supervised.label_column = "group"
  c.supervised.negative = "HC"
  c.supervised.positive = "MS"
  c.supervised.classifier = "svm"
  c.supervised.c = 1.0
  c.supervised.l2 = 1e-3
  c.supervised.steps = 500
  c.supervised.learning_rate = 0.05
  c.supervised.val_fraction = 0.2
  c.supervised.held_out = "subjects"  # subjects | codes
  c.supervised.alpha_per_separation = 25.0

  c.ground_truth = ml_collections.ConfigDict()
  c.ground_truth.enabled = True
  c.ground_truth.num_subjects = 8
  c.ground_truth.seed = 4321
  c.ground_truth.slice_position = 0.5

  c.report = ml_collections.ConfigDict()
  c.report.num_samples = 36
  c.report.grid_directions = 10
  c.report.gif_duration_ms = 120
  c.report.scrubber_slices = 8
  return c


def complete_analysis_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with every missing field taken from :func:`default_analysis_config`.

  Lets the discovery configs (configs/discover_*.py) drive ``analyze.py`` too.
  """
  return over_defaults(default_analysis_config(), config)


def validate_analysis_config(config: ml_collections.ConfigDict) -> None:
  """Config-only checks (milliseconds); ConfigError naming the key."""
  methods = tuple(config.methods)
  bad = [m for m in methods if m not in METHODS]
  if bad or not methods:
    raise ConfigError(f"config.methods={list(methods)}: unknown or empty; choose from "
                      f"{list(METHODS)}")
  if config.space not in SPACES:
    raise ConfigError(f"config.space={config.space!r}: choose one of {list(SPACES)}")
  if config.images.source not in ("heldout", "nifti", "dicom"):
    raise ConfigError(f"config.images.source={config.images.source!r}: choose 'heldout', "
                      "'nifti' or 'dicom'")
  if config.images.source in ("nifti", "dicom") and not str(config.images.path).strip():
    raise ConfigError("config.images.path is empty: set it to the NIfTI files (or DICOM "
                      f"folder) to invert when config.images.source={config.images.source!r}")
  if str(config.cache_mismatch) not in ("recompute", "error"):
    raise ConfigError(f"config.cache_mismatch={config.cache_mismatch!r}: choose 'recompute' "
                      "or 'error'")
  if int(config.images.max_subjects) < 0:
    raise ConfigError(f"config.images.max_subjects={config.images.max_subjects} must be >= 0 "
                      "(0: all)")
  t = config.traversal
  if int(t.alpha_num) < 3:
    raise ConfigError(f"config.traversal.alpha_num={t.alpha_num}: the eigen-analysis needs "
                      ">= 3 steps")
  if not 1 <= int(t.n_components) <= int(t.alpha_num):
    raise ConfigError(f"config.traversal.n_components={t.n_components} must be in "
                      f"1..config.traversal.alpha_num={t.alpha_num} (one eigenvector per "
                      "traversal step at most)")
  if int(t.directions_per_method) < 1:
    raise ConfigError(f"config.traversal.directions_per_method={t.directions_per_method} "
                      "must be >= 1")
  if int(t.max_subjects) < 0:
    raise ConfigError(f"config.traversal.max_subjects={t.max_subjects} must be >= 0 (0: all)")
  if not float(t.alpha_stop) != float(t.alpha_start):
    raise ConfigError("config.traversal.alpha_stop must differ from alpha_start")
  for name in ("steps", "batch_size"):
    if int(config.inversion[name]) < 1:
      raise ConfigError(f"config.inversion.{name}={config.inversion[name]} must be >= 1")
  if str(config.supervised.classifier) not in CLASSIFIERS:
    raise ConfigError(f"config.supervised.classifier={config.supervised.classifier!r}: "
                      f"choose one of {list(CLASSIFIERS)}")
  if not float(config.supervised.c) > 0:
    raise ConfigError(f"config.supervised.c={config.supervised.c!r} must be > 0 (the "
                      "SVM's C)")
  if str(config.supervised.get("held_out", "subjects")) not in HELD_OUT_SPLITS:
    raise ConfigError(f"config.supervised.held_out={config.supervised.held_out!r}: choose "
                      f"{' or '.join(map(repr, HELD_OUT_SPLITS))}")
  if float(config.supervised.alpha_per_separation) <= 0:
    raise ConfigError("config.supervised.alpha_per_separation must be > 0")
  if int(config.report.scrubber_slices) < 0:
    raise ConfigError(f"config.report.scrubber_slices={config.report.scrubber_slices} must be "
                      ">= 0 (0: no scrubber pages)")
  if "interfacegan" in methods and str(config.supervised.negative) == str(
      config.supervised.positive):
    raise ConfigError(f"config.supervised.negative and positive are both "
                      f"{str(config.supervised.positive)!r}: InterFaceGAN needs two classes")


# ----------------------------------------------------------------------------- compare_edits


def default_comparison_config() -> ml_collections.ConfigDict:
  """Every field :func:`run_edit_comparison` reads (configs/compare_edits*.py adjust).

  Fields:
    task: 'compare_edits' (analyze.py routes this config to :func:`run_edit_comparison`).
    seed: PRNG seed of the inversions (one key per model, folded from it).
    steps: T, images along every edit path (>= 3: the eigen-analysis' component 2).
    subjects.num_subjects: held-out subjects per phantom kind (one slice each).
    subjects.seed: population seed of the held-out subjects; choose one the models never
      saw (training phantoms use data.seed, analyze.py's held-out images data.seed +
      1000; 4321 is analyze.py's ground-truth seed, so the brain subjects match its
      ground-truth check).
    subjects.slice_position: slice of every subject (0..1 along the body axis).
    brain.ifcvae_gan: train.py workdir of an IFcVAE-GAN on brain phantoms (label
      'group'); '' = not compared.
    brain.ssdaae: workdir of a semi-supervised DAAE on brain phantoms; '' = none.
    brain.stylegan: workdir of a StyleGAN2 on brain phantoms; '' = none.
    brain.stylegan_directions: path stem (no .npz/.json) of its InterFaceGAN HC -> MS
      direction; '' = analyze.py's default <stylegan>/report/directions/
      interfacegan_directions.
    brain.stylegan_space: latent space of the projection and the direction: 'w' or 'w+'
      (must be the direction file's space).
    brain.alpha_stop: the StyleGAN edit walks alpha = 0..alpha_stop in the direction
      file's alpha units (meta alpha_unit; analyze_ms.py traverses 0..50).
    brain.inversion: projector settings of the StyleGAN (the fields of
      ``jaxlatent.inversion.default_inversion_config()``; defaults as
      configs/analyze_ms.py: 1000 steps, lr 0.1, MS-SSIM weight 0.1).
    thorax.ifcvae_gan: workdir of an IFcVAE-GAN on thorax phantoms (label
      'large_breast' or 'group'); '' = none.
    thorax.dcgan: workdir of a DCGAN on thorax phantoms; '' = none.
    thorax.dcgan_directions: path stem of its discovered directions with factor alignment
      (analyze_ct.py); '' = <dcgan>/report/directions/voynov_directions.
    thorax.factor: the thorax factor edited (the DCGAN's direction is the one best
      aligned with it); attribute models need 'breast_size' (their label).
    thorax.factor_value: the true change sets ``factor`` of male subjects to this value
      (breast_size 0.9: a large breast, large_breast = breast_size > 0.6).
    thorax.alpha_stop: the DCGAN edit walks alpha = 0..alpha_stop along the unit
      direction (Schön et al.'s largest traversal shift, 18).
    thorax.inversion: z-inversion settings of the DCGAN (Creswell & Bharath; defaults as
      configs/analyze_ct.py: RMSprop lr 0.01, 500 steps, 4 restarts).
    report.figure_subject: index of the subject shown in the per-kind figures.
  """

  c = ml_collections.ConfigDict()
  c.task = "compare_edits"
  c.seed = 0
  c.steps = 15

  c.subjects = ml_collections.ConfigDict()
  c.subjects.num_subjects = 16
  c.subjects.seed = 4321
  c.subjects.slice_position = 0.5

  c.brain = ml_collections.ConfigDict()
  c.brain.ifcvae_gan = ""
  c.brain.ssdaae = ""
  c.brain.stylegan = ""
  c.brain.stylegan_directions = ""
  c.brain.stylegan_space = "w"
  c.brain.alpha_stop = 50.0
  c.brain.inversion = default_inversion_config()
  c.brain.inversion.steps = 1000
  c.brain.inversion.learning_rate = 0.1
  c.brain.inversion.ssim_weight = 0.1

  c.thorax = ml_collections.ConfigDict()
  c.thorax.ifcvae_gan = ""
  c.thorax.dcgan = ""
  c.thorax.dcgan_directions = ""
  c.thorax.factor = "breast_size"
  c.thorax.factor_value = 0.9
  c.thorax.alpha_stop = 18.0
  c.thorax.inversion = default_inversion_config()

  c.report = ml_collections.ConfigDict()
  c.report.figure_subject = 0
  return c


def complete_comparison_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` over :func:`default_comparison_config` (missing fields take defaults)."""
  return over_defaults(default_comparison_config(), config)


def validate_comparison_config(config: ml_collections.ConfigDict) -> None:
  """Config-only checks (no file access); ConfigError naming the field."""

  if str(config.task) != "compare_edits":
    raise ConfigError(f"config.task={config.task!r}: run_edit_comparison runs 'compare_edits'")
  if int(config.steps) < 3:
    raise ConfigError(f"config.steps={config.steps}: the eigen-analysis (component 2) needs "
                      ">= 3 images per edit path")
  if int(config.subjects.num_subjects) < 1:
    raise ConfigError(f"config.subjects.num_subjects={config.subjects.num_subjects} must be "
                      ">= 1")
  if not 0.0 <= float(config.subjects.slice_position) <= 1.0:
    raise ConfigError(f"config.subjects.slice_position={config.subjects.slice_position} must "
                      "be in [0, 1]")
  if str(config.brain.stylegan_space) not in ("w", "w+"):
    raise ConfigError(f"config.brain.stylegan_space={config.brain.stylegan_space!r}: choose "
                      "'w' or 'w+'")
  for kind in KINDS:
    if float(config[kind].alpha_stop) == 0.0:
      raise ConfigError(f"config.{kind}.alpha_stop must not be 0")
    for name in ("steps", "batch_size"):
      if int(config[kind].inversion[name]) < 1:
        raise ConfigError(f"config.{kind}.inversion.{name}={config[kind].inversion[name]} "
                          "must be >= 1")
  factors = sorted(k for k in phantoms.factor_table("thorax") if k not in ("slice_position",
                                                                            "noise"))
  if str(config.thorax.factor) not in factors:
    raise ConfigError(f"config.thorax.factor={config.thorax.factor!r} is not a thorax phantom "
                      f"factor; choose one of {factors}")
  if str(config.thorax.ifcvae_gan).strip() and str(config.thorax.factor) != "breast_size":
    raise ConfigError(f"config.thorax.factor={config.thorax.factor!r}: the attribute model "
                      "config.thorax.ifcvae_gan edits the breast size (its label), so the "
                      "factor must be 'breast_size'; set config.thorax.ifcvae_gan='' to compare "
                      "the DCGAN alone on another factor")
  if not any(str(config[kind][field]).strip() for kind in KINDS for field in MODEL_FIELDS[kind]):
    fields = [f"config.{k}.{f}" for k in KINDS for f in MODEL_FIELDS[k]]
    raise ConfigError(f"nothing to compare: every model workdir is empty; set at least one of "
                      f"{fields}")


# ----------------------------------------------------------------------------- any study


def study_task(config: ml_collections.ConfigDict) -> str:
  """The study ``config`` asks for: its ``task`` field, 'analysis' without one."""
  task = config.get("task", "analysis")
  if task not in TASKS:
    raise ConfigError(f"config.task={task!r}: expected 'compare_edits' or 'label_fraction' "
                      "(or no task field: the analysis of --workdir)")
  return task


def complete_study_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` over the defaults of its study (``task``; none: the analysis of a run)."""
  task = study_task(config)
  if task == "compare_edits":
    return complete_comparison_config(config)
  if task == "label_fraction":
    return complete_train_config(config)
  return complete_analysis_config(config)
