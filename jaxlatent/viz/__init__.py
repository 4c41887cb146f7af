"""Figures: image grids (PNG without a plotting library)."""

from jaxlatent.viz.grids import make_grid, read_png, save_image_grid, to_uint8, write_png

__all__ = ["make_grid", "read_png", "save_image_grid", "to_uint8", "write_png"]
