import json

import pytest

from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import ConfigError


def test_defaults_are_the_seed_tutorials():
    config = RunConfig()
    assert config.model.input_dim == 784 and config.model.hidden_dims == (400,) and config.model.latent_dim == 20
    assert (config.train.batch_size, config.train.seed) == (128, 1)
    assert config.data.binarize == "none"


def test_round_trip_through_json():
    config = RunConfig(DataConfig("fashion-mnist", "dynamic", standardize=True),
                       ModelConfig(hidden_dims=(512, 256), latent_dim=32),
                       TrainConfig(epochs=3, batch_size=64, lr=5e-4, seed=9))
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_missing_keys_are_rejected():
    document = RunConfig().to_dict()
    del document["train"]["beta2"]
    with pytest.raises(ConfigError, match=r"config.train is missing key\(s\): beta2"):
        RunConfig.from_dict(document)


def partial(**sections):
    """A full config document with some sections' keys replaced."""
    document = RunConfig().to_dict()
    for section, values in sections.items():
        document[section] = values if not isinstance(values, dict) else {**document[section], **values}
    return document


@pytest.mark.parametrize("document, message", [
    ({**RunConfig().to_dict(), "trian": {}}, "config has unknown key(s): trian"),
    (partial(train={"epochs": "10"}), "config.train.epochs must be int, got '10'"),
    (partial(train={"epochs": True}), "config.train.epochs must be int, got True"),
    (partial(train={"lr": "fast"}), "config.train.lr must be a number"),
    (partial(train={"lr": 10**400}), "config.train.lr must be a number a float can hold, got an integer of 401 digits"),
    (partial(model={"hidden_dims": 400}), "config.model.hidden_dims must be a list"),
    (partial(model={"input_shape": [1, 28]}), "config.model.input_shape must have 3 items, got 2"),
    (partial(data=[]), "config.data must be an object"),
])
def test_strict_parsing(document, message):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(document)
    assert message in str(info.value)


@pytest.mark.parametrize("make, message", [
    (lambda: TrainConfig(epochs=0), "train.epochs must be a positive integer, got 0"),
    (lambda: TrainConfig(batch_size=-5), "train.batch_size must be a positive integer, got -5"),
    (lambda: TrainConfig(lr=0.0), "train.lr must be a number in (0, 10)"),
    (lambda: TrainConfig(seed=-1), "train.seed must be a non-negative integer"),
    (lambda: ModelConfig(hidden_dims=()), "needs at least one size"),
    (lambda: ModelConfig(latent_dim=0), "model.latent_dim must be a positive integer"),
    (lambda: DataConfig(binarize="otsu"), "data.binarize must be one of none, dynamic, threshold"),
    (lambda: DataConfig(standardize=1), "data.standardize must be true or false, got 1"),
])
def test_values_are_checked_on_construction(make, message):
    with pytest.raises(ConfigError) as info:
        make()
    assert message in str(info.value)


def test_the_recipe_sized_for_the_data():
    assert TrainConfig.for_data(54_000, 784) == TrainConfig() == TrainConfig.for_data(12_800, 784)  # MNIST's own
    gray = TrainConfig.for_data(1_800, 32 * 32)  # a smaller batch, then epochs for 400 steps; sqrt(784/1024) x 6e-3
    assert (gray.batch_size, gray.epochs, gray.lr) == (64, 14, 0.0053)
    assert TrainConfig.for_data(1_800, 3 * 128 * 128).lr == 0.00076 and TrainConfig.for_data(60_000, 3072).lr == 0.003
    assert (TrainConfig.for_data(10_000, 784).batch_size, TrainConfig.for_data(10_000, 784).epochs) == (64, 4)
    assert TrainConfig.for_data(1, 64).epochs == 100  # capped
    assert TrainConfig.for_data(1_800, 784, lr=1e-3, epochs=2) == TrainConfig(batch_size=64, lr=1e-3, epochs=2)
def test_in_effect_leaves_out_the_settings_that_do_not_apply():
    def fields(config):
        return {section: set(values) for section, values in config.in_effect().items()}

    every = {section: set(values) for section, values in RunConfig().to_dict().items()}
    plain = fields(RunConfig())  # MNIST, an MLP, the normal prior, no pixel groups
    assert every["data"] - plain["data"] == {"validation"}
    assert every["model"] - plain["model"] == {"conv_channels", "prior_components", "context_channels", "latent_layers",
                                               "context_features", "likelihood_components", "width", "blocks",
                                               "latent_shape"}
    assert plain["train"] == every["train"]
    rich = fields(RunConfig(DataConfig("/data/mine.npy"),
                            ModelConfig(architecture="conv", prior="vamp", pixel_groups=4), TrainConfig(iw_samples=5)))
    assert rich["data"] == every["data"]
    assert rich["model"] == every["model"] - {"latent_layers", "likelihood_components",  # one latent, no mixture
                                              "width", "blocks", "latent_shape"}  # no resnet
    mixture = fields(RunConfig(model=ModelConfig(likelihood="discretized-logistic-mixture")))
    assert every["model"] - mixture["model"] == every["model"] - plain["model"] - {"likelihood_components"}
    assert every["train"] - rich["train"] == {"free_bits"}  # the IWAE bound has no per-dimension KL to floor
    assert RunConfig().in_effect()["model"]["hidden_dims"] == (400,)  # values as to_dict() has them
