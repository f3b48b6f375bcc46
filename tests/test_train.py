import torch

from vaekit import ModelConfig, RunConfig, TrainConfig, Trainer, evaluate_elbo
from vaekit.data import fixed_binarization
from vaekit.fit import build_model


def train(images, config, epochs):
    model = build_model(config)
    trainer = Trainer(model, images, config.train, config.data.binarize, config.model.latent_dim)
    losses = [trainer.train_epoch() for _ in range(epochs)]
    return model, losses


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
