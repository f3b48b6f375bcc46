import math

import pytest
import torch

from vaekit import VAE, ModelConfig, evaluate_elbo
from vaekit.evaluate import gather_blocks, importance_weighted_nll, nll_blocks, time_left
from vaekit.objectives import bernoulli_nll

from .conftest import seeded


@pytest.fixture(scope="module")
def tiny():
    """A model with one latent dimension, where log p(x) can be integrated numerically."""
    torch.manual_seed(3)
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden_dims=(16,), latent_dim=1)).eval()
    with torch.no_grad():  # sharpen the decoder so that p(x|z) varies strongly with z
        model.decoder.head.weight.mul_(6)
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.4), generator=seeded(1))
    return model, x


def exact_nll(model, x):
    """-log p(x) = -log integral p(x|z) N(z; 0, 1) dz by the trapezoid rule on a fine grid."""
    z = torch.linspace(-9, 9, 40001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        log_lik = -bernoulli_nll(model.decode(z.float()).double()[:, None], x.double())  # (Z, N)
    log_prior = -0.5 * (math.log(2 * math.pi) + z.pow(2))
    integrand = log_lik + log_prior
    dz = z[1, 0] - z[0, 0]
    return -(torch.logsumexp(integrand, dim=0) + torch.log(dz))


def test_iwae_estimate_approaches_the_exact_likelihood(tiny):
    model, x = tiny
    exact = exact_nll(model, x)
    elbo = importance_weighted_nll(model, x, 1, seed=0)
    iw50 = importance_weighted_nll(model, x, 50, seed=0)
    iw5000 = importance_weighted_nll(model, x, 5000, seed=0)
    # the bound tightens towards log p(x) from above, on average and at K=5000 per image
    assert elbo.mean() > iw50.mean() > iw5000.mean()
    torch.testing.assert_close(iw5000, exact, atol=0.05, rtol=0)
    assert (elbo.mean() - exact.mean()) > 0.1  # the ELBO alone is visibly looser


def test_estimate_does_not_depend_on_chunking(tiny):
    model, x = tiny
    small = importance_weighted_nll(model, x, 300, seed=7, rows=64)
    large = importance_weighted_nll(model, x, 300, seed=7, rows=100_000)
    torch.testing.assert_close(small, large, atol=1e-4, rtol=0)
    assert not torch.allclose(small, importance_weighted_nll(model, x, 300, seed=8))


def test_blocks_resume_where_they_stopped_and_estimate_the_same_likelihood(tiny):
    model, x = tiny
    full = dict(nll_blocks(model, x, 2000, seed=4, block=2))
    assert sorted(full) == [0, 2, 4] and [len(v) for v in full.values()] == [2, 2, 1]
    # a stopped evaluation: blocks 0 and 4 done, 2 redone because its record is short (a torn line)
    done = {0: full[0].tolist(), 2: full[2].tolist()[:1], 4: full[4].tolist()}
    rest = dict(nll_blocks(model, x, 2000, seed=4, done=done, block=2))
    assert list(rest) == [2] and torch.equal(rest[2], full[2])  # each block has its own seeded stream
    done[2] = rest[2].tolist()
    blocked = gather_blocks(done, len(x), block=2)
    assert blocked.shape == (5,) and torch.equal(blocked[2:4], full[2].double())
    torch.testing.assert_close(blocked, exact_nll(model, x), atol=0.05, rtol=0)
    assert not torch.equal(full[2], importance_weighted_nll(model, x[2:4], 2000, seed=4))  # not one call's stream


def test_a_block_recorded_for_more_images_serves_their_first_images(tiny):
    model, x = tiny
    full = {start: nll.tolist() for start, nll in nll_blocks(model, x, 500, seed=4, block=2)}
    assert list(nll_blocks(model, x[:3], 500, seed=4, done=full, block=2)) == []  # 0-1 and 2 of 2-3: all there
    gathered = gather_blocks(full, 3, block=2)
    assert gathered.tolist() == full[0] + full[2][:1]
    fresh = dict(nll_blocks(model, x[:3], 500, seed=4, block=2))  # the same stream, image by image
    torch.testing.assert_close(fresh[2].double(), gathered[2:], atol=1e-5, rtol=0)
    assert list(dict(nll_blocks(model, x, 500, seed=4, done={0: full[0], 2: full[2][:1]}, block=2))) == [2, 4]


def test_blocks_show_one_bar_over_all_images(tiny, capsys):
    model, x = tiny
    list(nll_blocks(model, x, 50, seed=4, done={0: [1.0, 2.0]}, block=2, progress=True))
    err = capsys.readouterr().err
    assert "block 1 of 3" not in err and "batch" not in err  # block 1 was done: the bar starts at its images
    assert "NLL (K=50), block 2 of 3:  40%" in err and "| 2/5 images [" in err
    assert "NLL (K=50), block 3 of 3:  80%" in err and "| 4/5 images [" in err
    assert "time left known after the first block" in err and " left]" in err.split("block 3 of 3")[1]
    list(nll_blocks(model, x, 50, seed=4, block=2))
    assert capsys.readouterr().err == ""  # no bar unless asked


def test_the_time_left_comes_from_finished_blocks():
    assert time_left(0.0, 0, 9000) == "time left known after the first block"  # not an ETA from a compiling first chunk
    assert time_left(30.0, 1000, 9000) == "about 04:30 left"
    assert time_left(400.0, 1000, 9000) == "about 1:00:00 left"


def test_compiled_and_eager_estimates_agree(tiny):
    model, x = tiny
    eager = importance_weighted_nll(model, x, 200, seed=1, compile=False)
    compiled = importance_weighted_nll(model, x, 200, seed=1, compile=True)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=0)


def test_bf16_decoder_moves_the_estimate_by_little(tiny):
    model, x = tiny
    fp32 = importance_weighted_nll(model, x, 500, seed=1, precision="fp32")
    bf16 = importance_weighted_nll(model, x, 500, seed=1, precision="bf16")
    assert not torch.equal(fp32, bf16)  # bf16 really ran
    assert abs((fp32 - bf16).mean()) < 0.02 and (fp32 - bf16).abs().max() < 0.2


def test_single_sample_elbo_matches_its_terms():
    model = VAE(ModelConfig(hidden_dims=(32,), latent_dim=4))
    x = torch.rand(30, 1, 28, 28, generator=seeded(0))
    result = evaluate_elbo(model, x, seed=2, batch_size=7)
    assert result == evaluate_elbo(model, x, seed=2, batch_size=7)
    assert result["test_loss"] == pytest.approx(result["reconstruction"] + result["kl"])


def test_k_must_be_positive(tiny):
    with pytest.raises(ValueError, match="k must be at least 1"):
        importance_weighted_nll(tiny[0], tiny[1], 0, seed=0)


def test_bits_per_dim_basis_follows_the_likelihood_and_what_the_images_are():
    from vaekit.evaluate import bits_per_dim_basis

    grey = torch.tensor([0, 3, 128, 255], dtype=torch.float32).reshape(1, 1, 2, 2) / 255
    binary = torch.tensor([0.0, 1.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    standardized = (grey - grey.mean()) / grey.std()
    off_grid = grey + 0.3 / 255
    #                   binary, discrete_8bit: bernoulli, a density (gaussian), a discretized logistic
    kinds = {"bernoulli": (True, False), "density": (False, False), "discretized": (False, True)}
    expected = {"bernoulli": ("none", "binary", "none", "none"),
                "density": ("density", "none", "none", "none"),
                "discretized": ("8-bit", "binary", "none", "none")}
    for kind, flags in kinds.items():
        got = tuple(bits_per_dim_basis(*flags, x) for x in (grey, binary, standardized, off_grid))
        assert got == expected[kind], kind


def test_bits_per_dim_is_nats_over_dims_ln2_plus_the_bin_width_for_a_density():
    from vaekit.evaluate import bits_per_dim

    assert bits_per_dim(784 * math.log(2), 784, "8-bit") == pytest.approx(1.0)
    assert bits_per_dim(784 * math.log(2), 784, "binary") == pytest.approx(1.0)
    assert bits_per_dim(0.0, 784, "density") == pytest.approx(math.log2(255))  # 7.994: bins 1/255 wide
    with pytest.raises(ValueError, match="no bits/dim"):
        bits_per_dim(1.0, 784, "none")


def test_eval_reports_bits_per_dim_and_sample_draws_for_a_discretized_mixture(tmp_path, capsys, mnist_train):
    """Through the CLI: a mixture trains on 8-bit digits, `sample` draws its means as pictures, and `eval --json`
    gives bits/dim from the NLL and from the ELBO on the 8-bit basis."""
    import json

    import numpy as np
    from PIL import Image

    from vaekit.cli import main

    np.save(tmp_path / "digits.npy", mnist_train.images[:400, 0].numpy())
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "digits.npy"), "--likelihood", "discretized-logistic-mixture",
                 "--likelihood-components", "3", "--hidden", "32", "--latent", "4", "--epochs", "1",
                 "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["likelihood_components"] == 3 and config["format_version"] == 9
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert capsys.readouterr().out.startswith("wrote 4 samples to ")
    assert np.array(Image.open(tmp_path / "s.png")).dtype == np.uint8
    from vaekit.runs import load_run

    model = load_run(run).model
    with torch.no_grad():
        pictures = model.pictures(model.sample_prior(4, seeded(9)))  # what `sample` draws: E[x|z]
    assert pictures.shape == (4, 1, 28, 28) and 0 <= pictures.min() < 0.1 and 0.5 < pictures.max() <= 1
    assert main(["eval", str(run), "--json", "--iw-samples", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bits_per_dim_basis"] == "8-bit"
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (784 * math.log(2)))
    assert result["bits_per_dim_elbo"] == pytest.approx(result["test_loss"] / (784 * math.log(2)))
    assert 0 < result["bits_per_dim"] <= result["bits_per_dim_elbo"] < 8  # below 8 bits: it learned something
    assert main(["eval", str(run)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("bits/dim"))
    assert line.endswith("(8-bit; from the negative ELBO; see vaekit eval --help)")
    assert float(line.split()[1]) == pytest.approx(result["bits_per_dim_elbo"], abs=1e-4)
