"""Axial thorax CT phantom in Hounsfield units, with known anatomical factors.

One image = one axial slice, anterior up, radiological convention (the subject's
right on the image left, so the liver is on the image left and the heart apex
points to the image right).  Layers, painted in order with anti-aliased coverage:
air (-1000 HU) < body ellipse of subcutaneous fat (-100) < breasts (fat with a
glandular core, anterior) < soft tissue (40) < liver / left upper abdomen domes at
the base < lungs (-860, with texture and vessels) < heart (40, contrast blood pool
150) < descending aorta (150) < spine (cortical 700, cancellous 250, canal 30),
ribs and sternum.

Factors (:data:`THORAX_FACTORS`, name -> (low, high, default)):
  * ``rotation``: in-plane angle in degrees, counter-clockwise as displayed; the
    whole body turns about the image centre.
  * ``body_width``: scale of the body's lateral half-axis (and of the lateral
    positions of lungs and ribs); the fat layer thickens with it.
  * ``breast_size``: 0 = no breasts; 1 = large breasts.
  * ``lung_size``: scale of both lungs.
  * ``heart_size``: scale of the heart.
  * ``slice_position``: 0 = lung apex .. 1 = lung base.  The lungs are small at the
    apex, largest around 0.55-0.65 and are then pushed away by the diaphragm domes
    (liver on the subject's right from 0.6, spleen/stomach on the left from 0.68),
    so lung area rises and then falls.  The heart appears from 0.4 (largest near
    0.75), breasts are fullest in the middle.
  * ``noise``: standard deviation of white Gaussian noise in HU.

Subject-specific details (vessel pattern, lung texture, small shape jitter) come
from a ``jax.random`` key, so the same key with one factor changed renders the same
subject with only that factor's effect changed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlatent.phantoms import shapes

THORAX_FACTORS: dict[str, tuple[float, float, float]] = {
    "rotation": (-20.0, 20.0, 0.0),
    "body_width": (0.85, 1.15, 1.0),
    "breast_size": (0.0, 1.0, 0.0),
    "lung_size": (0.8, 1.2, 1.0),
    "heart_size": (0.8, 1.25, 1.0),
    "slice_position": (0.0, 1.0, 0.5),
    "noise": (0.0, 40.0, 10.0),
}

THORAX_LABELS: dict[int, str] = {
    0: "air", 1: "soft_tissue", 2: "fat", 3: "lung", 4: "heart", 5: "bone", 6: "breast",
    7: "liver",
}

HU = {
    "air": -1000.0, "fat": -100.0, "soft": 40.0, "gland": 30.0, "lung": -860.0,
    "heart": 40.0, "blood": 150.0, "liver": 60.0, "bone": 700.0, "marrow": 250.0,
    "cord": 30.0, "sternum": 500.0,
}
HU_MIN, HU_MAX = -1024.0, 3000.0

NUM_VESSELS = 32
NUM_TEXTURE = 4
RIB_ANGLES_RIGHT = (115.0, 135.0, 155.0, 175.0, 195.0, 215.0, 235.0)  # degrees, subject right


def details(key) -> dict[str, jnp.ndarray]:
  """Subject-specific random details drawn from ``key`` (a pytree of arrays)."""
  n = NUM_VESSELS
  u = shapes.UniformStream(key, 1 + 7 * n + 3 * NUM_TEXTURE)
  rad = 0.85 * jnp.sqrt(u.uniform((n,)))
  ang = u.uniform((n,), 0.0, 2 * jnp.pi)
  return {
      "ap_jitter": u.uniform((), -0.04, 0.04),
      "vessel_uv": jnp.stack([rad * jnp.cos(ang), rad * jnp.sin(ang)], -1),  # [n, 2]
      "vessel_drift": u.normal((n, 2), 0.4),
      "vessel_r": u.uniform((n,), 0.008, 0.02),
      "vessel_amp": u.uniform((n,), 0.4, 1.0),
      "tex_f": u.normal((NUM_TEXTURE, 2), 3.0),
      "tex_phase": u.uniform((NUM_TEXTURE,), 0.0, 2 * jnp.pi),
  }


def lung_profile(z):
  """Relative lung scale along z: 0.35 at the apex, 1 from z = 0.55 on."""
  return 0.35 + 0.65 * jnp.sin(0.5 * jnp.pi * jnp.clip(z / 0.55, 0.0, 1.0))


def heart_profile(z):
  """Relative heart scale: 0 above z = 0.4, 1 at z = 0.75, ~0.4 at the base."""
  return jnp.sin(jnp.pi * jnp.clip((z - 0.4) / 0.7, 0.0, 1.0))


def breast_profile(z):
  """Relative breast scale along z (fullest in the middle of the chest)."""
  return jnp.sin(jnp.pi * jnp.clip((z - 0.1) / 1.0, 0.0, 1.0))


def dome_radius(z, top, r_max):
  """Radius of a diaphragm dome's cross-section: 0 above ``top``, grows to the base."""
  return r_max * jnp.sqrt(jnp.clip((z - top) / (1.0 - top), 0.0, 1.0))


def fields(f: dict, det: dict, size: int):
  """Noise-free slice of one subject.

  Args:
    f: factor name -> scalar (all of :data:`THORAX_FACTORS`).
    det: :func:`details` of the subject.
    size: image side in pixels.

  Returns:
    (image float32 [size, size] HU, labels int32 [size, size], mask bool [size, size]).
  """
  x0, y0 = shapes.grid(size)
  pw = shapes.pixel_width(size)
  x, y = shapes.rotate_frame(x0, y0, f["rotation"])
  z = f["slice_position"]
  bw = f["body_width"]
  ell = lambda cx, cy, a, b, ang=0.0: shapes.ellipse(x, y, cx, cy, a, b, pw, ang)

  def union(cx, cy, a, b, ang):
    """Coverage of the union of K ellipses; each argument is a list or [K] array."""
    k = len(cx)

    def col(v):  # -> [K, 1, 1]
      if isinstance(v, (list, tuple)):
        v = jnp.stack([jnp.asarray(e, jnp.float32) for e in v])
      return jnp.broadcast_to(jnp.asarray(v, jnp.float32), (k,))[:, None, None]

    return jnp.max(shapes.ellipse(x[None], y[None], col(cx), col(cy), col(a), col(b), pw,
                                  col(ang)), 0)

  img = jnp.full((size, size), HU["air"], jnp.float32)
  lab = jnp.zeros((size, size), jnp.int32)

  # Body: fat envelope, breasts, soft tissue.
  cy = -0.03
  a_body = 0.74 * bw * (1.0 - 0.05 * (z - 0.5))
  b_body = 0.50 * (1.0 + det["ap_jitter"])
  t_fat = 0.03 + 0.08 * (bw - 0.85)
  m_body = ell(0.0, cy, a_body, b_body)
  img, lab = shapes.paint(img, lab, HU["fat"], 2, m_body)

  bs = f["breast_size"] * breast_profile(z)
  ba, bb = 0.17 * bs, 0.14 * bs
  bcy = cy + 0.86 * b_body
  bcx = 0.30 * bw
  m_breast = union([-bcx, bcx], [bcy, bcy], [ba, ba], [bb, bb], [15.0, -15.0])
  m_gland = union([-bcx, bcx], [bcy + 0.3 * bb] * 2, [0.55 * ba] * 2, [0.5 * bb] * 2,
                  [15.0, -15.0])
  img, lab = shapes.paint(img, lab, HU["fat"], 6, m_breast)
  img, lab = shapes.paint(img, lab, HU["gland"], 6, m_gland)
  m_fg = jnp.maximum(m_body, m_breast)

  a_in, b_in = a_body - t_fat, b_body - t_fat
  m_soft = ell(0.0, cy, a_in, b_in)
  img, lab = shapes.paint(img, lab, HU["soft"], 1, m_soft)

  # Diaphragm domes at the base: liver (subject right = image left), spleen/stomach.
  r_liver, r_left = dome_radius(z, 0.6, 0.36), dome_radius(z, 0.68, 0.32)
  m_liver = ell(-0.28 * bw, -0.02, r_liver * bw, r_liver) * m_soft
  m_ldome = ell(0.26 * bw, 0.0, r_left * bw, r_left) * m_soft
  img, lab = shapes.paint(img, lab, HU["liver"], 7, m_liver)
  img, lab = shapes.paint(img, lab, HU["soft"], 1, m_ldome)

  # Lungs with texture and vessels (vessels drift with z, so they form tubes in 3D).
  lz = lung_profile(z) * f["lung_size"]
  lax, lay = 0.20 * bw * lz, 0.33 * lz
  lcy = -0.01 - 0.1 * (1.0 - lung_profile(z))
  tex = shapes.cosine_texture(x, y, det["tex_f"], det["tex_phase"],
                              jnp.full((NUM_TEXTURE,), 8.0))
  side_of = jnp.where(jnp.arange(NUM_VESSELS) % 2 == 0, -1.0, 1.0)  # [K]
  uv = det["vessel_uv"] + det["vessel_drift"] * (z - 0.5)  # [K, 2]
  vx = side_of * 0.30 * bw + uv[:, 0] * lax  # [K]
  vy = lcy + uv[:, 1] * lay
  d2 = (x[None] - vx[:, None, None]) ** 2 + (y[None] - vy[:, None, None]) ** 2  # [K, H, W]
  r = jnp.sqrt(det["vessel_r"] ** 2 + (0.3 * pw) ** 2)  # at least a fraction of a pixel
  ves = jnp.max(det["vessel_amp"][:, None, None] * jnp.exp(-d2 / r[:, None, None] ** 2), 0)
  lung_val = shapes.lerp(HU["lung"] + tex, HU["soft"], ves)
  m_lung = union([-0.30 * bw, 0.30 * bw], [lcy, lcy], [lax, lax], [lay, lay], [-10.0, 10.0])
  m_lung = m_lung * (1.0 - jnp.maximum(m_liver, m_ldome)) * m_soft
  img, lab = shapes.paint(img, lab, lung_val, 3, m_lung)

  # Heart (lower half of the chest) with a contrast-filled blood pool; aorta.
  hz = jnp.sqrt(heart_profile(z)) * f["heart_size"]
  hcx, hcy = 0.08 * bw, 0.1
  img, lab = shapes.paint(img, lab, HU["heart"], 4, ell(hcx, hcy, 0.27 * hz, 0.19 * hz, 30.0))
  img, lab = shapes.paint(img, lab, HU["blood"], 4,
                          ell(hcx - 0.03 * hz, hcy - 0.01 * hz, 0.16 * hz, 0.11 * hz, 30.0))
  img, lab = shapes.paint(img, lab, HU["blood"], 1, ell(0.085, -0.19, 0.042, 0.042))

  # Spine: vertebral body, arch around the canal, spinous and transverse processes.
  img, lab = shapes.paint(img, lab, HU["bone"], 5, ell(0.0, -0.26, 0.078, 0.07))
  img, lab = shapes.paint(img, lab, HU["marrow"], 5, ell(0.0, -0.26, 0.058, 0.05))
  m_arch = union([0.0, 0.0, -0.075, 0.075], [-0.375, -0.44, -0.36, -0.36],
                 [0.055, 0.017, 0.05, 0.05], [0.05, 0.045, 0.016, 0.016], [0.0, 0.0, -20.0, 20.0])
  img, lab = shapes.paint(img, lab, HU["bone"], 5, m_arch)
  img, lab = shapes.paint(img, lab, HU["cord"], 1, ell(0.0, -0.375, 0.03, 0.028))

  # Ribs on a ring inside the soft tissue wall; sternum anteriorly.
  ra, rb = a_in - 0.05, b_in - 0.05
  base = jnp.array(RIB_ANGLES_RIGHT + tuple(180.0 - r for r in RIB_ANGLES_RIGHT))  # [R]
  phase = jnp.arange(base.shape[0]) % len(RIB_ANGLES_RIGHT)
  phi = jnp.deg2rad(base + 6.0 * jnp.sin(2 * jnp.pi * z + phase))  # [R]
  m_rib = union(ra * jnp.cos(phi), cy + rb * jnp.sin(phi), 0.028, 0.015, jnp.rad2deg(phi) + 90.0)
  img, lab = shapes.paint(img, lab, HU["bone"], 5, m_rib)
  st = shapes.bump(z, 0.55, 0.45)
  img, lab = shapes.paint(img, lab, HU["sternum"], 5,
                          ell(0.0, cy + b_in - 0.035, 0.05 * st, 0.02 * st))
  return img, lab, m_fg > 0.5


def add_noise(img, sigma, key):
  """Adds white Gaussian noise of std ``sigma`` HU and clips to the CT range."""
  n = jax.random.normal(key, img.shape, jnp.float32)
  return jnp.clip(img + sigma * n, HU_MIN, HU_MAX)
