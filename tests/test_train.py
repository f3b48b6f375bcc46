import dataclasses

import pytest
import torch

from vaekit import ModelConfig, RunConfig, TrainConfig, evaluate_elbo
from vaekit.data import fixed_binarization
from vaekit.fit import build_model

from .conftest import train


def test_same_seed_same_numbers(mnist_train):
    images = mnist_train.images[:2000]
    config = RunConfig(model=ModelConfig(hidden_dims=(64,), latent_dim=8), train=TrainConfig(batch_size=100, seed=3))
    a, losses_a = train(images, config, 2)
    b, losses_b = train(images, config, 2)
    assert losses_a == losses_b
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    c, losses_c = train(images, RunConfig(model=config.model, train=TrainConfig(batch_size=100, seed=4)), 2)
    assert losses_c != losses_a


def test_dynamic_binarization_trains_reproducibly(mnist_train):
    images = mnist_train.images[:1000]
    config = RunConfig(model=ModelConfig(hidden_dims=(32,), latent_dim=4), train=TrainConfig(batch_size=100))
    config = RunConfig(data=config.data.__class__(binarize="dynamic"), model=config.model, train=config.train)
    assert train(images, config, 1)[1] == train(images, config, 1)[1]


def test_a_real_mnist_slice_is_learned(mnist_train, mnist_test):
    """10k real images, 3 epochs: the test loss must fall far below the untrained model's ~543 nats."""
    config = RunConfig(train=TrainConfig(batch_size=64))
    model, losses = train(mnist_train.images[:10_000], config, 3)
    assert losses[0] > losses[1] > losses[2]
    test_x = fixed_binarization(mnist_test.images[:2000], "none", config.train.seed)
    untrained = evaluate_elbo(build_model(config), test_x, seed=1)["test_loss"]
    result = evaluate_elbo(model, test_x, seed=1)
    assert untrained > 500
    assert result["test_loss"] < 135, result  # the seed loop, after as many steps, is near 128
    assert abs(result["test_loss"] - result["reconstruction"] - result["kl"]) < 1e-6
    assert 5 < result["kl"] < 40


def test_learning_rate_schedule():
    from vaekit.train import learning_rate

    config = TrainConfig(lr=1.0, warmup=0.1, warmup_min_steps=10, schedule="cosine")
    rates = [learning_rate(config, s, 100) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert rates[10] == pytest.approx(1.0)
    assert rates[55] == pytest.approx(0.5)  # half way through the decay
    assert 0 < rates[-1] < 0.001 and all(a >= b for a, b in zip(rates[10:], rates[11:]))
    constant = TrainConfig.seed_settings(lr=0.01)
    assert {learning_rate(constant, s, 100) for s in range(100)} == {0.01}


@pytest.mark.parametrize("total_steps", [1, 10])
def test_a_short_run_warms_up_over_whole_steps_and_never_passes_the_peak(total_steps):
    from vaekit.train import learning_rate

    rates = [learning_rate(TrainConfig(lr=1.0), s, total_steps) for s in range(total_steps)]
    # the 20-step floor, capped by the run: the rate climbs in whole steps to the peak at the last one
    assert rates == pytest.approx([(s + 1) / total_steps for s in range(total_steps)], abs=1e-12)
    # before run format 5 (no floor), the warm-up was 5% of a step and its first step 20x the peak
    old = TrainConfig(lr=1.0, warmup_min_steps=0)
    assert learning_rate(old, 0, 1) == pytest.approx(20.0) and learning_rate(old, 0, 10) == pytest.approx(2.0)


@pytest.mark.parametrize("total_steps", [469, 4 * 469, 10 * 469])
def test_the_warmup_floor_leaves_mnist_schedules_bit_for_bit(total_steps):
    from vaekit.train import learning_rate, warmup_steps_of

    config = TrainConfig()
    assert warmup_steps_of(config, total_steps) == 0.05 * total_steps > config.warmup_min_steps
    no_floor = dataclasses.replace(config, warmup_min_steps=0)
    assert all(learning_rate(config, s, total_steps) == learning_rate(no_floor, s, total_steps)
               for s in range(total_steps))


def test_the_warmup_floor_applies_only_when_there_is_a_warmup():
    from vaekit.train import learning_rate, warmup_steps_of

    assert warmup_steps_of(TrainConfig(), 100) == 20 and warmup_steps_of(TrainConfig(), 1000) == 50
    assert [learning_rate(TrainConfig(lr=1.0), s, 100) for s in (0, 9, 19)] == pytest.approx([0.05, 0.5, 1.0])
    constant = TrainConfig.seed_settings(lr=0.01)
    assert warmup_steps_of(constant, 5) == 0 and learning_rate(constant, 0, 5) == 0.01


def test_an_epoch_of_few_steps_is_warned_of():
    from vaekit.train import few_steps_warning

    assert few_steps_warning(54_000, TrainConfig()) is None and few_steps_warning(1_280, TrainConfig()) is None
    assert few_steps_warning(1_152, TrainConfig()) == (
        "each epoch is only 9 optimizer steps (1152 training images at batch 128; 36 in all), too few to learn much: "
        "use a smaller --batch-size or more --epochs")
    assert "only 1 optimizer step (5 training images at batch 8; 3 in all), too few" in few_steps_warning(
        5, TrainConfig(batch_size=8, epochs=3))
    # the recipe's own choice for 270 images: enough steps in all, but an epoch of 5
    assert few_steps_warning(270, TrainConfig.for_data(270, 64)) == (
        "each epoch is only 5 optimizer steps (270 training images at batch 64; 400 in all), a small training set, "
        "which a VAE overfits easily: watch the test loss")


def epoch_of(images, **train_options):
    """One epoch of a small model; returns the model and the epoch's mean loss."""
    config = RunConfig(model=ModelConfig(hidden_dims=(64,), latent_dim=8),
                       train=TrainConfig(batch_size=100, **train_options))
    model, losses = train(images, config, 1)
    return model, losses[0]


def test_compiled_step_matches_the_eager_step(mnist_train):
    images = mnist_train.images[:2000]
    eager, loss_eager = epoch_of(images, compile="off", precision="fp32")
    compiled, loss_compiled = epoch_of(images, compile="on", precision="fp32")
    assert loss_compiled == pytest.approx(loss_eager, rel=1e-4)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(b, a, atol=2e-4, rtol=1e-3, msg=name)


def test_bf16_autocast_keeps_the_fp32_learning_curve(mnist_train):
    images = mnist_train.images[:3000]
    _, fp32 = epoch_of(images, compile="off", precision="fp32")
    model, bf16 = epoch_of(images, compile="off", precision="bf16")
    assert bf16 == pytest.approx(fp32, rel=5e-3)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_a_failed_compilation_falls_back_to_eager(mnist_train, monkeypatch):
    import vaekit.acceleration

    def broken_compile(fn, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("no C++ compiler\nmore detail")
        return fail

    monkeypatch.setattr(vaekit.acceleration.torch, "compile", broken_compile)
    images = mnist_train.images[:500]
    _, eager = epoch_of(images, compile="off", precision="fp32")
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler\)"):
        _, fallback = epoch_of(images, compile="on", precision="fp32")
    assert fallback == eager
