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

    config = TrainConfig(lr=1.0, warmup=0.1, schedule="cosine")
    rates = [learning_rate(config, s, 100) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert rates[10] == pytest.approx(1.0)
    assert rates[55] == pytest.approx(0.5)  # half way through the decay
    assert 0 < rates[-1] < 0.001 and all(a >= b for a, b in zip(rates[10:], rates[11:]))
    constant = TrainConfig.seed_settings(lr=0.01)
    assert {learning_rate(constant, s, 100) for s in range(100)} == {0.01}


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
