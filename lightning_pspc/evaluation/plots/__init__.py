"""Charts of the evaluation, drawn off-screen as matplotlib ``Figure`` objects and saved as PNG.

* :mod:`.common`: saving, image mosaics, log axes, line styles;
* :mod:`.comparison_charts`: MSE to the references against sigma, epoch x sigma maps, panels,
  samples above their nearest training images;
* :mod:`.generalization_charts`: linearity and Gaussian fit, sample agreement, memorization over
  training time, the phase diagram;
* :mod:`.linear_charts`: the linear distillation against sigma, over epochs and over N;
* :mod:`.locality_charts`: patch sizes against sigma and over epochs, heatmaps of pixels;
* :mod:`.transition_charts`: across training-set sizes (the transition, twins, locality).
"""

from .common import (
    BAND_COLORS,
    GAP,
    KIND_LABELS,
    KIND_STYLES,
    grid_axes,
    mosaic,
    save_figure,
    tile_centre,
    tile_start,
    to_display,
)
from .comparison_charts import (
    heatmap_figure,
    mse_vs_sigma_figure,
    neighbours_figure,
    pairwise_figure,
    panel_figure,
)
from .generalization_charts import (
    agreement_figure,
    memorized_vs_images_figure,
    per_sigma_figure,
    per_sigma_heatmap,
    phase_diagram_figure,
)
from .linear_charts import linear_distillation_figure, linear_distillation_heatmap
from .locality_charts import (
    best_fit_figure,
    heatmap_pixels_figure,
    patch_size_heatmap_figure,
    patch_size_vs_sigma_figure,
)
from .transition_charts import (
    draw_linearity_panel,
    draw_twins_panel,
    locality_transition_figure,
    transition_figure,
    twins_figure,
)

__all__ = [
    "BAND_COLORS",
    "GAP",
    "KIND_LABELS",
    "KIND_STYLES",
    "grid_axes",
    "mosaic",
    "tile_centre",
    "tile_start",
    "to_display",
    "agreement_figure",
    "best_fit_figure",
    "draw_linearity_panel",
    "draw_twins_panel",
    "heatmap_figure",
    "heatmap_pixels_figure",
    "linear_distillation_figure",
    "linear_distillation_heatmap",
    "locality_transition_figure",
    "memorized_vs_images_figure",
    "mse_vs_sigma_figure",
    "neighbours_figure",
    "pairwise_figure",
    "panel_figure",
    "patch_size_heatmap_figure",
    "patch_size_vs_sigma_figure",
    "per_sigma_figure",
    "per_sigma_heatmap",
    "phase_diagram_figure",
    "save_figure",
    "transition_figure",
    "twins_figure",
]
