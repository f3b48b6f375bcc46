"""Training a run end to end: data, model, the epoch loop, and what each epoch writes to the run dir.

`fit` starts a run, `resume` continues one from its checkpoint. Both end in the same loop, which
after every epoch commits a checkpoint (model, optimizer, epoch, metrics) and then writes
model.safetensors, metrics.jsonl, samples_<epoch>.png and reconstruction_<epoch>.png, and calls the
callbacks (vaekit.callbacks); at the end, loss.png. A resumed run ends with the same weights as an
uninterrupted one (bitwise, on CPU).

Under torch.distributed (vaekit.distributed) every process trains its slice of each batch through a
DistributedDataParallel wrapper; only the main process creates the run directory, evaluates the test set,
writes the checkpoint, weights, metrics and images, logs and calls the callbacks, while the others wait for it
(`World.on_main`: the barrier after each checkpoint commit, which also tells them if it failed). On resume every
process loads the checkpoint (the run directory must be on a file system they share).
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from . import pretrained, runs
from .atomic import check_target
from .callbacks import (N_RECONSTRUCTIONS, Callback, CallbackError, Epoch, closing, notify, read_only,
                        with_tensorboard)
from .config import RunConfig
from .registry import ARCHITECTURES
from .data import ImageSet, as_seen, load_train_test
from .data.preparation import Preparation, background
from .data.streamed import StreamedSet, held_out_inputs
from .devices import resolve_device
from .distributed import World, is_peer_failure, peer_failure, world as current_world
from .errors import ConfigError, Interrupted, RunError, TrainingError
from .evaluate import collapse_streak, collapse_warning, evaluate_elbo, posterior_diagnostics
from . import models
from .models import LatentVariableModel, check_size, parameter_count
from .plots import save_image_grid, save_loss_curve
from .rng import derive_seed
from .threads import MAX_THREADS, BusyMonitor, threads_chosen_by_user, usable_cpus
from .train import Trainer, epoch_seeds, few_steps_warning
from .validation import adam_spec, check_adam_values, check_param_groups, check_tensors, state_spec

COLLAPSE_PATIENCE = 5  # epochs in a row a posterior collapse lasts (after the KL warm-up) before training warns

Log = Callable[[str], None]


def build_model(config: RunConfig) -> LatentVariableModel:
    """A freshly initialised model of the config's family: the same weights for the same seed, whatever the device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.train.seed, "init"))
        return models.build_model(config.model)


def fit(config: RunConfig, out: str | Path, *, data_dir: str | Path | None = None, device: str = "auto",
        progress: bool = False, log: Log | None = None, images: ImageSet | None = None,
        callbacks: Iterable[Callback] | None = None, tensorboard: bool = False,
        model: LatentVariableModel | None = None) -> runs.Run:
    """Train `config` into a new run directory `out`; returns the finished run. Its images are fitted to
    `config.model.input_shape` (`data.preparation`), and the run records their background (`data.background`,
    measured here whatever `config` says), against which later commands judge new images' polarity.

    `images`: the images at `config.data.name` when the caller has already read them (they are not
    read again); the run still records the path, which `resume` reads. `callbacks`: called after every
    epoch (vaekit.callbacks); `tensorboard`: log to out/tensorboard (a TensorBoardCallback). `model`: the
    model to train instead of a new one of `config.model`, e.g. `VAE(config.model, encoder=..., decoder=...)`
    with networks of your own; `config.model` must be its config (`model.config`).
    """
    callbacks = with_tensorboard(callbacks, tensorboard)  # a missing tensorboard fails before anything else
    dev = resolve_device(device)
    if model is not None and isinstance(model, LatentVariableModel):
        config = dataclasses.replace(config, model=model.config)  # VAE(encoder=...) records architecture "custom"
    check_size(config.model)
    data, measured = _load_data(config, data_dir, progress, images)  # bad data fails before a run directory exists
    config = _measured(config, measured)
    model = runs.given_model(model, config) or build_model(config)  # and so does a model that cannot be built
    out = current_world().on_main(runs.create_run, out, config)
    with closing(callbacks):
        return _train(out, config, None, data, dev, progress, log or (lambda line: None), callbacks, model)


def resume(path: str | Path, *, epochs: int | None = None, data_dir: str | Path | None = None,
           device: str = "auto", progress: bool = False, log: Log | None = None,
           callbacks: Iterable[Callback] | None = None, tensorboard: bool = False,
           model: LatentVariableModel | None = None) -> runs.Run:
    """Continue the run at `path` from its last finished epoch; `epochs` may raise its total. `callbacks` and
    `tensorboard` as for `fit`; each callback's `resumed` sees the last finished epoch first. `model`: for a run
    whose networks were given in Python, the same model again (its weights are replaced by the checkpoint's)."""
    pretrained.refuse_shipped(path, "resuming training", pretrained.NOT_RESUMABLE)
    callbacks = with_tensorboard(callbacks, tensorboard)
    path = Path(path)
    dev = resolve_device(device)
    config = runs.read_config(path)
    model = runs.given_model(model, config)
    world = current_world()
    if world.is_main():
        runs.remove_stale_temp_files(path)
    model_bytes = 4 * _parameters(config, model)  # fp32
    checkpoint = runs.load_checkpoint(path, max_bytes=3 * model_bytes + (64 << 20))  # weights, Adam's 2 moments
    if checkpoint is None and runs.has_finished_epoch(path):  # lost: starting over would replace what it trained
        raise RunError(f"{path} has finished epochs but no {runs.CHECKPOINT_FILE} (a regular file) to continue "
                       f"from; its model still serves every other command: train a new run with --out to go on")
    world.on_main(lambda: [check_target(path / name)  # refused now, not after an epoch
                           for name in (runs.CHECKPOINT_FILE, runs.WEIGHTS_FILE, runs.METRICS_FILE)])
    done = checkpoint[1]["epoch"] if checkpoint else 0
    new_total = epochs is not None and epochs != config.train.epochs
    if new_total:
        if epochs < done:
            raise ConfigError(f"--epochs {epochs} is fewer than the {done} epochs {path} has finished")
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    data, _ = _load_data(config, data_dir, progress)  # bad data fails before the config is rewritten
    if new_total:
        world.on_main(runs.write_config, path, config)
    with closing(callbacks):
        return _train(path, config, checkpoint, data, dev, progress, log or (lambda line: None), callbacks, model)


def _parameters(config: RunConfig, model: LatentVariableModel | None) -> int:
    """How many parameters the run's model has: counted on the meta device, or, for networks given in Python,
    as given (vaekit cannot build them), or for a builder that does not build on the meta device, built."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    try:
        return parameter_count(config.model)
    except ConfigError:
        if config.model.architecture in ARCHITECTURES:
            raise
        return sum(p.numel() for p in build_model(config).parameters())  # its own failure, if any, is said here


def restart(path: str | Path, config: RunConfig, *, data_dir: str | Path | None = None, device: str = "auto",
            progress: bool = False, log: Log | None = None, images: ImageSet | None = None,
            callbacks: Iterable[Callback] | None = None, tensorboard: bool = False) -> runs.Run:
    """Train the run at `path` from scratch with `config`, which replaces its own: only while the run has no
    finished epoch (its first one failed or was stopped), so that nothing it trained is lost."""
    pretrained.refuse_shipped(path, "restarting training", pretrained.NOT_RESUMABLE)
    callbacks = with_tensorboard(callbacks, tensorboard)
    path = Path(path)
    runs.read_config(path)  # a run directory, and one this vaekit reads
    if runs.has_finished_epoch(path):
        raise RunError(f"{path} has finished epochs; it continues only with its own config (vaekit train "
                       f"--resume {shlex.quote(str(path))}), or train a new run with --out")
    dev = resolve_device(device)
    data, measured = _load_data(config, data_dir, progress, images)  # bad data fails before the config is rewritten
    config = _measured(config, measured)

    def rewrite():
        runs.remove_stale_temp_files(path)
        runs.write_config(path, config)

    current_world().on_main(rewrite)
    with closing(callbacks):
        return _train(path, config, None, data, dev, progress, log or (lambda line: None), callbacks)


def _load_data(config: RunConfig, data_dir, progress: bool, images: ImageSet | None = None):
    """The run's training and test images, fitted to its model's size and channels (`data.preparation`), and the
    training images' background brightness (measured before any standardization), which polarity needs."""
    preparation = Preparation(config.model.input_shape, config.data.resize)
    train_set, test_set = load_train_test(config.data.name, config.data.validation, config.train.seed, data_dir,
                                          progress, images, stream=True, preparation=preparation)
    if train_set.shape != config.model.input_shape:
        raise ConfigError(f"{train_set.name} images are {train_set.shape}, "
                          f"the model expects {config.model.input_shape}")
    if isinstance(train_set, StreamedSet):  # from a cache: the background of (at most) its first 10,000 images
        measured = background(train_set.read(0, min(len(train_set), 10_000)))
        standardize = config.data.standardize
        return (train_set.standardized(standardize), test_set.standardized(standardize)), measured
    measured = background(train_set.images)
    return (as_seen(train_set, config.data.standardize), as_seen(test_set, config.data.standardize)), measured


def _measured(config: RunConfig, measured: float) -> RunConfig:
    """`config` recording its training images' background (data.background)."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, background=measured))


def _train(out: Path, config: RunConfig, checkpoint, data, dev: torch.device, progress: bool, log: Log,
           callbacks: list[Callback], model: LatentVariableModel | None = None) -> runs.Run:
    train_set, test_set = data
    world = current_world()
    log = log if world.is_main() else (lambda line: None)
    model = (model or build_model(config)).to(dev)
    trainer = Trainer(wrapped(model, dev, world), train_set.images.to(dev), config.train, config.data.binarize, world)
    test_x = held_out_inputs(test_set, config.data.binarize, config.train.seed, dev)  # a tensor, or read by slices
    sample_seed = derive_seed(config.train.seed, "samples")  # the same prior draws every epoch
    metrics: list[dict] = []

    def epoch_state() -> Epoch:  # what the callbacks see of the last committed epoch
        return Epoch(metrics[-1]["epoch"], read_only(metrics[-1]), tuple(map(read_only, metrics)),
                     trainer.optimizer.param_groups[0]["lr"], model, out, config, sample_seed,
                     test_x[:N_RECONSTRUCTIONS])

    if checkpoint is not None:
        metrics = _restore(out, config, trainer, checkpoint, log)  # every process loads the checkpoint
        state = epoch_state()
        if world.is_main():
            _write_epoch_files(out, state, metrics, images=False)
            notify(callbacks, state, "resumed")
        if trainer.epoch >= config.train.epochs:
            save_loss_curve(out / "loss.png", metrics)
            log(f"{out} has already finished its {config.train.epochs} epochs; pass --epochs N to train longer")
            return runs.Run(out, config, model.eval(), metrics)
        log(f"resuming {out} after epoch {trainer.epoch} of {config.train.epochs} "
            f"({torch.get_num_threads()} CPU thread(s))")

    if few_steps := few_steps_warning(len(train_set), config.train):
        log(f"warning: {few_steps}")
    saved, warned = trainer.epoch, False
    epochs_busy = BusyMonitor(torch.get_num_threads(), window_seconds=0)  # each epoch judged whole, for its line

    def finish_epoch(epoch: int, train_loss: float, seconds: float, hint: str | None) -> None:
        """The main process's work after an epoch: evaluate, commit the checkpoint, write, log, call back."""
        nonlocal saved, warned
        busy = f"  ({hint})" if hint else ""
        test = evaluate_elbo(model, test_x, config.train.seed)
        diagnostics = posterior_diagnostics(model, test_x)
        metrics.append({"epoch": epoch, "train_loss": train_loss, "test_loss": test["test_loss"],
                        "test_reconstruction": test["reconstruction"], "test_kl": test["kl"],
                        "active_units": diagnostics["active_units"], "kl_per_dim": diagnostics["kl_per_dim"],
                        **({"kl_per_layer": diagnostics["kl_per_layer"]} if "kl_per_layer" in diagnostics
                           else {}),
                        **(trainer.last_tc_terms or {}),  # --tc-beta: the train KL's MI, TC, dimension-wise KL
                        "seconds": seconds})
        tensors, meta = trainer.state()
        runs.save_checkpoint(out, tensors, {**meta, "metrics": metrics})  # the commit point
        saved = epoch
        state = epoch_state()
        _write_epoch_files(out, state, metrics)
        layers = diagnostics.get("kl_per_layer") or {}
        per_layer = ("; per layer " + ", ".join(f"{name} {kl:.2f}" for name, kl in layers.items())
                     if layers and None not in layers.values() else "")
        log(f"epoch {epoch:3d}/{config.train.epochs}  train {train_loss:8.3f}  test {test['test_loss']:8.3f}  "
            f"(rate {test['kl']:.2f}{per_layer}, distortion {test['reconstruction']:.2f}, active units "
            f"{diagnostics['active_units']}/{config.model.latent_dim})  {seconds:.2f} s{busy}")
        streak = collapse_streak(metrics, config.model.latent_dim, config.train.kl_warmup)
        # a collapse that lasts, or that the run ends in: early epochs often pass through one and recover
        if not warned and (streak >= COLLAPSE_PATIENCE or (streak and epoch == config.train.epochs)):
            log(f"warning: {collapse_warning(diagnostics, config.model.latent_dim, config.model.pixel_groups)}")
            warned = True
        notify(callbacks, state)  # the one call after an epoch

    try:
        for epoch in range(trainer.epoch + 1, config.train.epochs + 1):
            start = time.perf_counter()
            epochs_busy.start(torch.get_num_threads())
            train_loss = trainer.train_epoch(progress=progress)
            seconds = time.perf_counter() - start
            hint = epochs_busy.step(trainer.steps_per_epoch) if dev.type == "cpu" else None
            # the other processes wait here until the checkpoint is committed (or its failure is known)
            world.on_main(finish_epoch, epoch, train_loss, seconds, hint)
            saved = epoch
    except KeyboardInterrupt:
        error = Interrupted(f"interrupted during epoch {saved + 1}; {out} keeps its {saved} finished epoch(s); "
                            f"continue with: vaekit train --resume {out}{nproc_flag(world)}")
        error.quiet = not world.is_main()
        raise error from None
    except CallbackError:
        raise  # its message says what the run keeps
    except TrainingError as e:
        if not world.is_main():
            raise  # the main process says what the run keeps
        if saved:
            raise TrainingError(f"{e}; {out} keeps its checkpoint of epoch {saved}") from None
        # nothing trained is lost by starting again, so the run takes new settings (vaekit.fit.restart)
        lower = min(config.train.lr / 10, 1e-3)
        again = f"vaekit train --resume {shlex.quote(str(out))} --lr {lower:g}{nproc_flag(world)}"
        raise TrainingError(f"{e}; {out} has no finished epoch, so it can start again with new settings: "
                            f"{again}") from None
    except RuntimeError as e:
        if not (world.distributed and is_peer_failure(e)):
            raise
        error = peer_failure(e, f"during epoch {saved + 1}")
        raise TrainingError(f"{error}; {out} keeps its {saved} finished epoch(s); continue with: vaekit train "
                            f"--resume {shlex.quote(str(out))}{nproc_flag(world)}") from None
    metrics = world.broadcast(metrics)  # every process returns the run's metrics
    if world.is_main():
        save_loss_curve(out / "loss.png", metrics)
    return runs.Run(out, config, model.eval(), metrics)


def wrapped(model: LatentVariableModel, device: torch.device, world: World) -> torch.nn.Module:
    """The model to step: `model` itself in a world of one, else a DistributedDataParallel wrapper of it, which
    averages the processes' gradients during backward. Every parameter gets a gradient at every step (a VampPrior's
    pseudo-inputs and a pixel context's weights through the loss), so DDP needs no unused-parameter search."""
    if not world.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def nproc_flag(world: World) -> str:
    """What a command that continues this run adds to say how many processes (nothing in a world of one)."""
    return f" --nproc {world.size}" if world.distributed else ""


def _restore(out: Path, config: RunConfig, trainer: Trainer, checkpoint, log: Log) -> list[dict]:
    """Load a checkpoint into the trainer after checking it belongs to this config and this vaekit."""
    tensors, meta = checkpoint  # runs.load_checkpoint checked the metadata's form
    source = out / runs.CHECKPOINT_FILE
    # Every tensor by name, shape, dtype and finiteness before torch sees it: Adam's fused kernel trusts the
    # shapes of its state, and a checkpoint without that state would resume with a fresh Adam, not exactly.
    parameters = list(trainer.module.parameters())
    try:
        check_tensors({k: t for k, t in tensors.items() if k.startswith("model.")},
                      state_spec(trainer.module.state_dict(), "model."), "weights")
        check_tensors({k: t for k, t in tensors.items() if not k.startswith("model.")}, adam_spec(parameters),
                      "optimizer state")
        check_adam_values(tensors, meta["epoch"] * trainer.steps_per_epoch)
        groups = check_param_groups(meta["param_groups"], trainer.optimizer.state_dict()["param_groups"])
    except ValueError as e:
        raise RunError(f"{source}: {e}; the run cannot be resumed from it") from None
    if meta.get("next_epoch_seeds") != epoch_seeds(config.train.seed, meta["epoch"] + 1):
        raise RunError(f"{source}: written by a vaekit that draws its random streams differently; "
                       "resuming would not repeat the run (train it again, or use the version that wrote it)")
    recorded = meta.get("threads")  # absent in checkpoints older than the load-aware default
    if recorded is not None and (type(recorded) is not int or not 1 <= recorded <= MAX_THREADS):
        raise RunError(f"{source}: meta.threads must be a thread count from 1 to {MAX_THREADS}, got {recorded!r}; "
                       "the run cannot be resumed from it")
    try:
        trainer.load_state(tensors, {**meta, "param_groups": groups})
    except (KeyError, ValueError, RuntimeError) as e:
        raise RunError(f"{source}: optimizer state does not fit this run ({e})") from None
    if recorded and not threads_chosen_by_user():  # go on as it was trained: float32 sums depend on the count
        usable = len(usable_cpus())
        if recorded <= usable:
            torch.set_num_threads(recorded)
        else:  # from a bigger machine (or doctored): that many threads here would wait for each other at every step
            log(f"warning: {source} was trained with {recorded} CPU threads, more than the {usable} usable here; "
                f"going on with {torch.get_num_threads()}, so its numbers may differ in the last digits "
                f"(--threads {recorded} keeps them, slowly)")
    return list(meta["metrics"])


def _write_epoch_files(out: Path, state: Epoch, metrics: list[dict], images: bool = True) -> None:
    """What follows the checkpoint each epoch: the weights, the metrics and, unless told not to, the images."""
    epoch = state.epoch
    runs.save_weights(out, state.model, epoch)
    runs.write_metrics(out, metrics)
    if images or not (out / f"samples_{epoch}.png").exists() or not (out / f"reconstruction_{epoch}.png").exists():
        save_image_grid(out / f"samples_{epoch}.png", state.samples())
        save_image_grid(out / f"reconstruction_{epoch}.png", state.reconstructions(), nrow=len(state.test_inputs))
