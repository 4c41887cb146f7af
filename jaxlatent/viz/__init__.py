"""Figures: image grids (PNG without a plotting library) and scrubbable traversal pages."""

from jaxlatent.viz.grids import make_grid, read_png, save_image_grid, to_uint8, write_png
from jaxlatent.viz.scrubber import traversal_panels, write_scrubber

__all__ = ["make_grid", "read_png", "save_image_grid", "to_uint8", "traversal_panels",
           "write_png", "write_scrubber"]
