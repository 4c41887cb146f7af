"""Axial T1-weighted brain MR phantom (skull-stripped), with known factors.

One image = one axial slice, anterior up, radiological convention.  Intensities
(arbitrary T1-like units): background 0, CSF 0.15, GM 0.5, WM 0.8, lesions 0.35
(T1-hypointense "black holes").  Layers: intracranial ellipse filled with CSF <
brain tissue (the intracranial ellipse shrunk by the peripheral CSF width, minus
radial sulci, which include the interhemispheric fissure) painted GM < WM where
the tissue is deeper than the cortical ribbon thickness (so the GM ribbon wraps
around every sulcus) < WM lesions < two lateral ventricles (CSF, "butterfly").

Factors (:data:`BRAIN_FACTORS`, name -> (low, high, default)):
  * ``ventricle_size``: scale of the lateral ventricles (area ~ size^2).
  * ``atrophy``: 0..1; thinner GM ribbon, wider and deeper sulci, wider peripheral
    CSF space (the intracranial ellipse itself does not change).
  * ``lesion_load``: 0..1; lesion candidates (positions, radii, thresholds) are drawn
    from the key, and lesion k grows from radius 0 to its full radius while
    ``lesion_load`` goes from its threshold t_k to t_k + 0.15, so raising the load
    with the same key only adds or enlarges lesions.  Lesions are 3D ellipsoids
    (visible on neighbouring slice positions) and are kept inside WM.
  * ``slice_position``: 0 = inferior .. 1 = superior (vertex).  The cross-section is
    largest near 0.4 and shrinks towards the vertex; the lateral ventricles exist
    between 0.2 and 0.8 (largest at 0.5).
  * ``rotation``: in-plane angle in degrees, counter-clockwise as displayed.
  * ``noise``: Rician noise level (std of the Gaussian noise on each of the real
    and imaginary channels); 0 gives the exact noise-free image.

Labels (:data:`BRAIN_LABELS`): 0 background, 1 CSF, 2 GM, 3 WM, 4 ventricle, 5 lesion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlatent.phantoms import shapes

BRAIN_FACTORS: dict[str, tuple[float, float, float]] = {
    "ventricle_size": (0.6, 2.0, 1.0),
    "atrophy": (0.0, 1.0, 0.0),
    "lesion_load": (0.0, 1.0, 0.0),
    "slice_position": (0.0, 1.0, 0.5),
    "rotation": (-15.0, 15.0, 0.0),
    "noise": (0.0, 0.08, 0.02),
}

BRAIN_LABELS: dict[int, str] = {
    0: "background", 1: "csf", 2: "gm", 3: "wm", 4: "ventricle", 5: "lesion",
}

T1 = {"background": 0.0, "csf": 0.15, "gm": 0.5, "wm": 0.8, "lesion": 0.35}

NUM_SULCI = 20
NUM_LESIONS = 20
LESION_RAMP = 0.15  # lesion_load range over which one lesion grows to full size
Z_SCALE = 1.1  # grid units per unit of slice_position (~120 mm brain height)


def details(key) -> dict[str, jnp.ndarray]:
  """Subject-specific random details drawn from ``key`` (a pytree of arrays)."""
  ns, nl = NUM_SULCI, NUM_LESIONS
  u = shapes.UniformStream(key, 4 + 3 * ns + 6 * nl + 9)
  return {
      "ab_jitter": u.uniform((2,), -0.04, 0.04),
      "sulcus_phi": 2 * jnp.pi * (jnp.arange(ns) + 0.5 + u.uniform((ns,), -0.3, 0.3)) / ns,
      "sulcus_drift": u.normal((ns,), 0.4),
      "sulcus_depth": u.uniform((ns,), 0.04, 0.1),
      "gm_wobble_phase": u.uniform((2,), 0.0, 2 * jnp.pi),
      "lesion_psi": u.uniform((nl,), 0.0, 2 * jnp.pi),
      "lesion_rho": u.uniform((nl,), 0.22, 0.62),
      "lesion_z": u.uniform((nl,), 0.15, 0.85),
      "lesion_r": u.uniform((nl,), 0.02, 0.05),
      "lesion_t": 0.9 * (jnp.arange(nl) + u.uniform((nl,))) / nl,
      "tex_f": u.normal((3, 2), 4.0),
      "tex_phase": u.uniform((3,), 0.0, 2 * jnp.pi),
  }


def size_profile(z):
  """Relative brain cross-section scale along z: ~0.83 at 0, 1 at 0.4, ~0.55 at 1."""
  return jnp.sqrt(jnp.clip(1.0 - ((z - 0.4) / 0.75) ** 2, 0.04, 1.0))


def ventricle_profile(z):
  """Relative ventricle scale along z: 0 outside [0.2, 0.8], 1 at 0.5."""
  return jnp.sqrt(shapes.bump(z, 0.5, 0.3))


def lesion_radii(f: dict, det: dict):
  """In-plane radius [K] of each lesion candidate at this slice and lesion load."""
  grow = jnp.clip((f["lesion_load"] - det["lesion_t"]) / LESION_RAMP, 0.0, 1.0)
  r3 = det["lesion_r"] * jnp.sqrt(grow)  # 3D in-plane radius
  dz = Z_SCALE * (f["slice_position"] - det["lesion_z"]) / (2.0 * jnp.maximum(r3, 1e-6))
  return r3 * jnp.sqrt(jnp.clip(1.0 - dz**2, 0.0, 1.0))


def fields(f: dict, det: dict, size: int):
  """Noise-free slice of one subject.

  Args:
    f: factor name -> scalar (all of :data:`BRAIN_FACTORS`).
    det: :func:`details` of the subject.
    size: image side in pixels.

  Returns:
    (image float32 [size, size], labels int32 [size, size], mask bool [size, size]).
  """
  x0, y0 = shapes.grid(size)
  pw = shapes.pixel_width(size)
  x, y = shapes.rotate_frame(x0, y0, f["rotation"])
  z = f["slice_position"]
  at = f["atrophy"]
  s = size_profile(z)
  a = 0.62 * s * (1.0 + det["ab_jitter"][0])
  b = 0.80 * s * (1.0 + det["ab_jitter"][1])

  img = jnp.zeros((size, size), jnp.float32)
  lab = jnp.zeros((size, size), jnp.int32)
  m_icv = shapes.ellipse(x, y, 0.0, 0.0, a, b, pw)
  img, lab = shapes.paint(img, lab, T1["csf"], 1, m_icv)

  # Brain tissue = shrunk ellipse minus sulci (radial segments, 2 midline fissures).
  t_csf = 0.02 + 0.05 * at
  d_surf = shapes.ellipse_sdf(x, y, 0.0, 0.0, a - t_csf, b - t_csf)
  phi = jnp.concatenate([det["sulcus_phi"] + det["sulcus_drift"] * (z - 0.5),
                         jnp.array([0.5 * jnp.pi, 1.5 * jnp.pi])])  # [K]
  depth = jnp.concatenate([det["sulcus_depth"] * (1.0 + 0.6 * at),
                           jnp.array([0.22, 0.26]) * s])  # [K]
  hw = 0.006 + 0.018 * at
  ca, sa = jnp.cos(phi)[:, None, None], jnp.sin(phi)[:, None, None]
  d_in = depth[:, None, None]
  dseg = shapes.segment_distance(x[None], y[None],
                                 (a - t_csf - d_in) * ca, (b - t_csf - d_in) * sa,
                                 1.1 * a * ca, 1.1 * b * sa)  # [K, H, W]
  d_sulc = jnp.min(dseg, 0) - hw
  d_tissue = jnp.maximum(d_surf, -d_sulc)
  m_tissue = shapes.coverage(d_tissue, pw) * m_icv
  img, lab = shapes.paint(img, lab, T1["gm"], 2, m_tissue)

  # WM: deeper than the (slightly wobbling) cortical ribbon thickness.
  ang = jnp.arctan2(y / b, x / a)
  wob = 0.5 * jnp.cos(3 * ang + det["gm_wobble_phase"][0]) + 0.5 * jnp.cos(
      5 * ang + det["gm_wobble_phase"][1])
  t_gm = 0.065 * (1.0 - 0.6 * at) * (1.0 + 0.15 * wob)
  m_wm = shapes.coverage(d_tissue + t_gm, pw) * m_icv
  tex = shapes.cosine_texture(x, y, det["tex_f"], det["tex_phase"], jnp.full((3,), 0.01))
  img, lab = shapes.paint(img, lab, T1["wm"] + tex, 3, m_wm)

  # Lesions (kept inside WM).
  r = lesion_radii(f, det)  # [L]
  lx = a * det["lesion_rho"] * jnp.cos(det["lesion_psi"])
  ly = b * det["lesion_rho"] * jnp.sin(det["lesion_psi"])
  d_les = shapes.circle_sdf(x[None], y[None], lx[:, None, None], ly[:, None, None],
                            r[:, None, None])  # [L, H, W]
  cov_les = shapes.coverage(d_les, pw) * shapes.fade(r, pw)[:, None, None]
  m_les = jnp.max(cov_les, 0) * m_wm
  img = shapes.lerp(img, T1["lesion"], m_les)
  lab = jnp.where((jnp.max(cov_les, 0) > 0.5) & (m_wm > 0.5), 5, lab)

  # Lateral ventricles: two tilted ellipses near the centre.
  vz = ventricle_profile(z) * f["ventricle_size"] * s
  vax, vay = 0.05 * vz, 0.17 * vz
  vcx, vcy = 0.015 + 0.9 * vax, 0.03 * s
  d_v = jnp.minimum(shapes.ellipse_sdf(x, y, -vcx, vcy, vax, vay, 10.0),
                    shapes.ellipse_sdf(x, y, vcx, vcy, vax, vay, -10.0))
  m_vent = shapes.coverage(d_v, pw) * shapes.fade(vax, pw) * m_icv
  img, lab = shapes.paint(img, lab, T1["csf"], 4, m_vent)
  return img, lab, m_icv > 0.5


def add_noise(img, sigma, key):
  """Rician (magnitude) noise: |img + sigma (n1 + i n2)|; exact ``img`` when sigma = 0."""
  n = jax.random.normal(key, (2,) + img.shape, jnp.float32)
  return jnp.where(sigma > 0, jnp.sqrt((img + sigma * n[0]) ** 2 + (sigma * n[1]) ** 2), img)
