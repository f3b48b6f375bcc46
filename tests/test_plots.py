import io

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.errors import ConfigError
from vaekit.plots import (MAX_PICTURE_PIXELS, auto_scale, check_picture_pixels, extremes_picture, gif_bytes,
                          image_grid, kl_plot_figure, kl_plot_png, labelled_grid, manifold_picture, save_image_grid,
                          save_loss_curve, traverse_picture, value_label)


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


def test_the_default_scale_makes_images_about_96_pixels_within_1600():
    assert auto_scale(28, 302) == 4  # the interpolation strip: 302x32 -> 1208x128
    assert auto_scale(28, 581) == 2  # the 20x20 manifold: 1600 // 581
    assert auto_scale(128, 500) == 1 and auto_scale(28, 5000) == 1 and auto_scale(10, 100) == 10


def tiles(n, h=3, w=4, channels=1):
    """n images, image i filled with (i + 1) / (n + 1), never white."""
    return (torch.arange(1, n + 1, dtype=torch.float32) / (n + 1)).view(n, 1, 1, 1).expand(n, channels, h, w).clone()


def test_a_labelled_grid_places_each_image_exactly_and_its_labels_beside_it():
    plain = labelled_grid(tiles(5), nrow=3, scale=2, padding=1)
    assert plain.shape == (2 + 2 * (6 + 2), 2 + 3 * (8 + 2)) and plain.dtype == np.uint8  # no text, no margins
    assert (plain[2:8, 2:10] == round(255 / 6)).all() and (plain[10:16, 12:20] == round(5 * 255 / 6)).all()
    assert (plain[10:16, 22:30] == 255).all()  # the empty sixth cell, white

    labelled = labelled_grid(tiles(6), nrow=3, scale=2, padding=1, row_labels=["z3", "z12"],
                             col_labels=["-3", "0", "+3"], title="a title")
    text = labelled < 20  # black text; the images are grey (36 and up)
    top = labelled.shape[0] - (plain.shape[0])  # the title and column labels take the top
    left = labelled.shape[1] - plain.shape[1]  # the row labels take the left
    assert top > 10 and left > 10 and text[:top].any() and text[top:, :left].any() and not text[top:, left:].any()
    first = labelled[top + 2:top + 8, left + 2:left + 10]
    assert (first == round(255 / 7)).all()  # the images themselves are untouched
    for row in range(2):  # each row's label lies beside its row
        band = slice(top + 2 + row * 8, top + 8 + row * 8)
        assert text[band, :left].any()

    faint = labelled_grid(tiles(2) * 0.3, nrow=2, scale=1, padding=1, each_to_white=True)
    assert faint[1, 1] == 255 and faint[1, 6] == 255  # each image scaled to its brightest pixel
    colour = labelled_grid(tiles(2, channels=3), nrow=2, scale=1, captions=["1.5\nname", "2"])
    assert colour.ndim == 3 and colour.shape[2] == 3 and (colour[..., 0] < 40).any()


def test_value_labels():
    assert [value_label(v) for v in torch.linspace(-3, 3, 9).tolist()] == \
        ["-3", "-2.25", "-1.5", "-0.75", "0", "+0.75", "+1.5", "+2.25", "+3"]
    assert value_label(-1.6448536) == "-1.64" and value_label(-0.0001) == "0"


def test_traverse_manifold_and_extremes_pictures_hold_every_image_at_the_default_scale():
    traverse = traverse_picture(tiles(6, 28, 28), dims=[3, 12], values=[-3.0, 0.0, 3.0], base="test image 0")
    assert traverse.shape[1] > 3 * 4 * 28 and traverse.shape[0] > 2 * 4 * 28  # 4x: 112-pixel images
    manifold = manifold_picture(tiles(16, 28, 28), dims=(2, 12), values=[-1.6, -0.5, 0.5, 1.6])
    assert manifold.shape[1] > 4 * 4 * 28 and (manifold == 255).any()
    scores = torch.linspace(90, 10, 8).tolist()
    extremes = extremes_picture(tiles(8, 28, 28), scores, [f"{i}.png" for i in range(8)], n=4)
    two = labelled_grid(tiles(4, 28, 28), 4, scale=4, captions=["1\n2"] * 4, title="t")
    assert extremes.shape == (2 * two.shape[0], two.shape[1])  # two titled blocks, one above the other


def test_pictures_past_the_pixel_bound_are_refused_before_anything_is_drawn():
    check_picture_pixels(7744, 7744)  # 64 MNIST images at --scale 32: the largest common request, allowed
    tiles = torch.zeros(100, 1, 28, 28)  # (100 x 30 + 2) * 32 = 96,064 pixels a side: 9.2 G pixels
    for draw in (lambda: image_grid(tiles, nrow=100, scale=32), lambda: labelled_grid(tiles, 10, scale=32),
                 lambda: gif_bytes(tiles, scale=32)):
        with pytest.raises(ConfigError, match=f"at most {MAX_PICTURE_PIXELS:,}"):
            draw()
