import io

import numpy as np
import torch
from PIL import Image

from vaekit.plots import image_grid, kl_plot_figure, kl_plot_png, save_image_grid, save_loss_curve


def test_grid_places_each_image_with_padding():
    images = torch.zeros(5, 1, 2, 3)
    for i in range(5):
        images[i] = (i + 1) / 10
    grid = image_grid(images, nrow=3, padding=1, pad_value=1.0)
    assert grid.shape == (1 + 2 * 3, 1 + 3 * 4) and grid.dtype == np.uint8
    assert grid[1, 1] == round(0.1 * 255) and grid[1 + 3, 1 + 4] == round(0.5 * 255)
    assert grid[0, 0] == 255 and grid[4, 9] == 255  # padding, and the empty sixth cell


def test_grid_scales_up_by_pixel_repetition():
    grid = image_grid(torch.rand(1, 1, 4, 4), nrow=1, padding=0, scale=3)
    assert grid.shape == (12, 12) and (grid[:3, :3] == grid[0, 0]).all()


def test_saved_png_decodes_to_the_grid(tmp_path):
    images = torch.rand(4, 1, 28, 28)
    path = save_image_grid(tmp_path / "sub" / "g.png", images, nrow=2)
    np.testing.assert_array_equal(np.array(Image.open(path)), image_grid(images, nrow=2))
    assert [p.name for p in path.parent.iterdir()] == ["g.png"]  # no temp file left


def test_loss_curve_is_a_png(tmp_path):
    rows = [{"epoch": e, "train_loss": 150 - 5 * e, "test_loss": 140 - 4 * e} for e in range(1, 5)]
    path = save_loss_curve(tmp_path / "loss.png", rows)
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (600, 400)


def test_kl_plot_names_dimensions_as_eval_does_and_marks_collapsed_ones():
    rows = [{"epoch": 1, "kl_per_dim": [0.4, 0.3, 1.0, 0.9, 0.2], "active_units": 5},
            {"epoch": 2, "kl_per_dim": [0.5, 0.0002, 2.0, 1.0, 0.004], "active_units": 3}]
    heat_ax, bar_ax, _ = kl_plot_figure(rows).axes  # and the colour bar
    names = ["z2", "z3", "z0", "z4", "z1"]  # by final KL, by their index in the model, as eval prints them
    assert [t.get_text() for t in bar_ax.get_xticklabels()] == names
    assert [t.get_text() for t in heat_ax.get_yticklabels()] == names
    [markers] = bar_ax.get_lines()  # below 0.01 nats: z4 and z1, whose bars are too short to see
    assert markers.get_xdata().tolist() == [3, 4] and markers.get_label() == "near zero: collapsed (2 of 5)"
    assert [t.get_text() for t in bar_ax.texts] == ["2", "1", "0.5", "0.004", "0.0002"]  # each bar's value
    assert Image.open(io.BytesIO(kl_plot_png(rows))).size == (1000, 420)
    wide = [{"epoch": 1, "kl_per_dim": [float(d) for d in range(100)]}]
    bar_ax = kl_plot_figure(wide).axes[1]
    assert [t.get_text() for t in bar_ax.get_xticklabels()][:3] == ["z99", "z96", "z93"] and not bar_ax.texts
