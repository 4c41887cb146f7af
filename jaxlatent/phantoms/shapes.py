"""Anti-aliased analytic shape primitives on a pixel grid (pure jnp, vmappable).

Coordinates: a ``size x size`` image covers [-1, 1]^2; pixel (row i, column j)
has its centre at ``x = -1 + (2j + 1) / size`` (x grows to the image right) and
``y = 1 - (2i + 1) / size`` (y grows to the image *top*, i.e. anterior in every
phantom).  Shapes are described by an (approximate) signed distance ``d``
(negative inside) and filled with :func:`coverage`, a smoothstep of ``d`` over one
pixel width.  Coverage is exactly 0 or 1 further than half a pixel from an edge, so
backgrounds stay exactly 0 and a change of one factor changes only the pixels near
the shapes that factor moves, while images still vary continuously with factors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.special  # noqa: F401  (ndtri)
import numpy as np


def grid(size: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Pixel-centre coordinates ``(x, y)``, each float32 [size, size] (y up)."""
  c = (2.0 * jnp.arange(size, dtype=jnp.float32) + 1.0) / size - 1.0  # [size]
  x = jnp.broadcast_to(c[None, :], (size, size))
  y = jnp.broadcast_to(-c[:, None], (size, size))
  return x, y


def pixel_width(size: int) -> float:
  """Width of one pixel in grid units."""
  return 2.0 / size


def rotate_frame(x, y, angle_deg, cx=0.0, cy=0.0):
  """Object-frame coordinates of grid points when the object is turned by ``angle_deg``.

  The object rotates counter-clockwise as displayed (x right, y up) about
  ``(cx, cy)``, so its frame coordinates are the grid rotated by ``-angle``.
  """
  t = jnp.deg2rad(angle_deg)
  c, s = jnp.cos(t), jnp.sin(t)
  u, v = x - cx, y - cy
  return c * u + s * v + cx, -s * u + c * v + cy


def coverage(d, pw):
  """Fraction of a pixel inside a shape with signed distance ``d`` (smoothstep, width pw)."""
  t = jnp.clip(0.5 - d / pw, 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


def lerp(base, value, m):
  """Paints ``value`` over ``base`` with coverage ``m``."""
  return base + (value - base) * m


def ellipse_sdf(x, y, cx, cy, a, b, angle_deg=0.0):
  """Approximate signed distance to an ellipse (first order: f / |grad f|).

  Exact for circles; for the mild eccentricities used here the error is a small
  fraction of the half-axes.  ``angle_deg`` turns the ellipse counter-clockwise.
  """
  a = jnp.maximum(a, 1e-6)
  b = jnp.maximum(b, 1e-6)
  u, v = rotate_frame(x, y, angle_deg, cx, cy)
  u, v = u - cx, v - cy
  r = jnp.sqrt((u / a) ** 2 + (v / b) ** 2)
  g = jnp.sqrt((u / a**2) ** 2 + (v / b**2) ** 2)
  r_over_g = jnp.where(r < 1e-7, jnp.minimum(a, b), r / jnp.maximum(g, 1e-30))
  return (r - 1.0) * r_over_g


def fade(extent, pw):
  """0 -> 1 ramp as a shape's smallest extent grows from 0 to half a pixel.

  Multiplied into a coverage, it makes a shape of size 0 vanish exactly (instead
  of leaving a one-pixel dot) while staying continuous in the size.
  """
  return jnp.clip(extent / (0.5 * pw), 0.0, 1.0)


def ellipse(x, y, cx, cy, a, b, pw, angle_deg=0.0):
  """Coverage of an ellipse; exactly 0 everywhere when ``min(a, b) == 0``."""
  return coverage(ellipse_sdf(x, y, cx, cy, a, b, angle_deg), pw) * fade(jnp.minimum(a, b), pw)


def circle_sdf(x, y, cx, cy, r):
  """Signed distance to a circle."""
  return jnp.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def segment_distance(x, y, ax, ay, bx, by):
  """Unsigned distance from grid points to the segment (a, b)."""
  pax, pay = x - ax, y - ay
  bax, bay = bx - ax, by - ay
  h = jnp.clip((pax * bax + pay * bay) / jnp.maximum(bax * bax + bay * bay, 1e-12), 0.0, 1.0)
  return jnp.sqrt((pax - bax * h) ** 2 + (pay - bay * h) ** 2)


def bump(z, centre, half_width):
  """Half-sine profile: 0 outside ``centre +- half_width``, 1 at the centre."""
  t = jnp.clip((z - centre) / half_width, -1.0, 1.0)
  return jnp.cos(0.5 * jnp.pi * t) * (jnp.abs(t) < 1.0)


def principal_axis_angle(mask) -> float:
  """Angle (degrees, counter-clockwise as displayed) of the long axis of a 2D mask.

  Computed from second moments of the foreground pixels in (x right, y up)
  coordinates; the result is in (-90, 90].  NumPy helper for tests and analyses.
  """
  m = np.asarray(mask, np.float64)
  rows, cols = np.nonzero(m > 0.5)
  x, y = cols.astype(np.float64), -rows.astype(np.float64)
  x, y = x - x.mean(), y - y.mean()
  cxx, cyy, cxy = (x * x).mean(), (y * y).mean(), (x * y).mean()
  return float(np.rad2deg(0.5 * np.arctan2(2.0 * cxy, cxx - cyy)))


def paint(image, labels, value, label, m):
  """Paints ``value`` with coverage ``m`` and sets ``label`` where ``m > 0.5``."""
  return lerp(image, value, m), jnp.where(m > 0.5, jnp.int32(label), labels)


def cosine_texture(x, y, freqs, phases, amps):
  """Sum of plane waves ``sum_j amps_j cos(2 pi freqs_j . p + phases_j)``; [J, 2], [J], [J]."""
  arg = 2.0 * jnp.pi * (freqs[:, 0, None, None] * x + freqs[:, 1, None, None] * y)
  return jnp.sum(amps[:, None, None] * jnp.cos(arg + phases[:, None, None]), axis=0)


class UniformStream:
  """Slices one ``jax.random.uniform`` draw into named parameter arrays.

  A single random draw per subject keeps the compiled graph small (every separate
  ``jax.random`` call adds a threefry kernel to compile).
  """

  def __init__(self, key, total: int):
    self._u = jax.random.uniform(key, (total,), jnp.float32, 1e-6, 1.0 - 1e-6)
    self._i = 0

  def uniform(self, shape=(), low=0.0, high=1.0):
    """Uniform [low, high) of ``shape``."""
    n = int(np.prod(shape))
    u = self._u[self._i:self._i + n].reshape(shape)
    self._i += n
    return low + (high - low) * u

  def normal(self, shape=(), scale=1.0):
    """Normal(0, scale^2) of ``shape`` (inverse CDF of uniforms)."""
    return scale * jax.scipy.special.ndtri(self.uniform(shape))
