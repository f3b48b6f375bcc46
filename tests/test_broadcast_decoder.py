"""benchmarks/broadcast.py, the spatial broadcast decoder the disentanglement benchmark trains with
(`--architecture broadcast:build`): its broadcast sum is the 1x1 convolution of z tiled beside the coordinates, it
keeps the (S, B) leading axes, and it trains through vaekit on real dSprites images and loads back the same."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, fit, load_run
from vaekit.data import dsprites
from vaekit.data.batches import to_unit
from vaekit.data.imageset import ImageSet
from vaekit.representation import embed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def broadcast(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("broadcast", None)
    import broadcast

    yield broadcast
    sys.modules.pop("broadcast", None)


def test_the_broadcast_sum_is_the_tiled_1x1_convolution(broadcast):
    torch.manual_seed(0)
    decoder = broadcast.BroadcastDecoder(latent_dim=5, output_shape=(1, 12, 10), channels=6, layers=2).double()
    z = torch.randn(3, 5, dtype=torch.float64)
    h, w = 12, 10
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    tiled = torch.cat([z[:, :, None, None].expand(3, 5, h, w),
                       torch.stack([xs, ys]).double()[None].expand(3, 2, h, w)], dim=1)  # (B, D + 2, H, W)
    weight = torch.cat([decoder.from_z.weight, decoder.from_coords.weight[:, :, 0, 0]], dim=1)[:, :, None, None]
    expected = decoder.body(F.conv2d(tiled, weight, decoder.from_z.bias))
    assert torch.allclose(decoder(z), expected, rtol=0, atol=1e-12)
    assert decoder(z).shape == (3, 1, 12, 10)
    # importance samples: (S, B, D) -> (S, B, C, H, W), each sample decoded as on its own
    stacked = torch.stack([z, 2 * z])
    out = decoder(stacked)
    assert out.shape == (2, 3, 1, 12, 10)
    assert torch.allclose(out[1], decoder(2 * z), rtol=0, atol=1e-12)


def test_it_trains_on_dsprites_and_loads_back_the_same(broadcast, tmp_path, monkeypatch):
    monkeypatch.setattr(broadcast, "CHANNELS", 8)  # a third of the benchmark's width: seconds, not tens
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, size, 512) for size in dsprites.FACTOR_SIZES], axis=1)
    images = torch.from_numpy(dsprites.render(factors) * np.uint8(255))[:, None]
    config = RunConfig(
        data=DataConfig(name="dsprites-slice", binarize="none", validation=0.25),
        model=ModelConfig(input_shape=(1, 64, 64), architecture="broadcast:build", hidden_dims=(64,), latent_dim=4),
        train=TrainConfig(epochs=4, batch_size=64, lr=1e-3, seed=0, tc_beta=6.0, precision="fp32"))
    run = fit(config, tmp_path / "run", images=ImageSet(images, None, "dsprites-slice"), device="cpu")
    first, last = (float(m["test_loss"]) for m in (run.metrics[0], run.metrics[-1]))
    assert last < 0.6 * first  # 24 steps: 2,244 -> 1,109 nats here
    assert isinstance(run.model.decoder, broadcast.BroadcastDecoder) and run.model.decoder.from_z.out_features == 8
    again = load_run(tmp_path / "run")
    x = to_unit(images[:16])
    assert torch.equal(embed(again.model, x)[0], embed(run.model, x)[0])
    with torch.no_grad():
        z = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
        decoded = run.model.decoder(z)
        assert torch.equal(again.model.decoder(z), decoded)  # (loaded while CHANNELS is still 8, as it was built)
        # it reads z: four codes decode to four different images, not one background
        assert (decoded - decoded.mean(0)).abs().amax() > 0.05  # 0.18 logits here; a decoder ignoring z: 0
