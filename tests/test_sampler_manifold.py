"""`vaekit manifold --sampler NAME`: the grid in the plane of a fitted sampler's first two principal directions."""

from __future__ import annotations

import pytest
import torch

from vaekit.cli import main
from vaekit.generate import manifold_values, plane_manifold, sampler_plane
from vaekit.runs import load_run
from vaekit.samplers.base import SamplerConfig
from vaekit.samplers.store import fit_sampler, save_sampler

from .tiny_run import copy_run, is_one_error_line, make_tiny_run

# a correlated Gaussian in 3-D with principal deviations 3, 1.5 and 0.5 along a rotated basis
ROTATION = torch.linalg.qr(torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.5, 1.0], [0.3, -1.0, 2.0]]))[0]
DEVIATIONS = torch.tensor([3.0, 1.5, 0.5])
CENTER = torch.tensor([1.0, -2.0, 0.5])


class GaussianStub:
    """A sampler drawing CENTER + ROTATION diag(DEVIATIONS) eps: its principal axes are ROTATION's columns."""

    def sample(self, n, generator=None):
        return CENTER + (torch.randn(n, 3, generator=generator) * DEVIATIONS) @ ROTATION.T


def test_the_plane_of_a_gaussian_is_its_mean_and_first_two_principal_axes():
    center, axes, values = sampler_plane(GaussianStub(), 5, torch.Generator().manual_seed(0), draws=40_000)
    assert center == pytest.approx(CENTER, abs=0.05)
    assert axes @ axes.T == pytest.approx(torch.eye(2), abs=1e-5)  # unit and orthogonal
    for axis, column in zip(axes, (0, 1)):
        assert abs(float(axis @ ROTATION[:, column])) == pytest.approx(1.0, abs=0.01)
        assert axis[axis.abs().argmax()] > 0  # the sign convention: the largest entry is positive
    # along each axis, the quantiles of N(0, deviation^2): the prior manifold's values scaled
    for row, deviation in zip(values, DEVIATIONS[:2]):
        assert row == pytest.approx(manifold_values(5) * deviation, abs=0.08)
    # the same generator seed, the same plane
    again = sampler_plane(GaussianStub(), 5, torch.Generator().manual_seed(0), draws=40_000)
    assert all(torch.equal(a, b) for a, b in zip((center, axes, values), again))


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    path = copy_run(make_tiny_run(tmp_path_factory.mktemp("manifold")), tmp_path_factory.mktemp("gmm") / "run")
    run = load_run(path)
    save_sampler(path, fit_sampler(run, SamplerConfig("gmm", components=3)))
    return path


def test_the_plane_manifold_decodes_the_grid_row_by_row(gmm_run):
    run = load_run(gmm_run)
    center, axes = torch.zeros(4), torch.eye(4)[:2]
    values = torch.tensor([[-1.0, 0.0, 2.0], [-0.5, 0.5, 1.5]])
    images = plane_manifold(run.model, center, axes, values)
    assert images.shape == (9, 1, 28, 28)
    # top left: the first value across, the highest down; bottom right: the last across, the lowest down
    expected = torch.tensor([[-1.0, 1.5, 0, 0], [2.0, -0.5, 0, 0], [0.0, 0.5, 0, 0]])
    assert torch.allclose(images[[0, 8, 4]], run.model.pictures(expected), atol=1e-6)


def test_manifold_with_a_fitted_sampler_end_to_end(gmm_run, tmp_path, capsys):
    out = tmp_path / "m.png"
    assert main(["manifold", str(gmm_run), "--sampler", "gmm", "--side", "4", "-o", str(out), "--threads", "1"]) == 0
    assert "gmm sampler's first two principal directions" in capsys.readouterr().out
    from PIL import Image

    with Image.open(out) as picture:
        assert picture.width > 4 * 28 and picture.height > 4 * 28
    # a sampler that was never fitted: one line naming the command that fits it
    code = main(["manifold", str(gmm_run), "--sampler", "flow", "-o", str(tmp_path / "f.png"), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 4 and is_one_error_line(err) and f"vaekit fit-sampler {gmm_run} --sampler flow" in err
    assert not (tmp_path / "f.png").exists()
