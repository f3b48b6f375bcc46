"""The training loop: one epoch at a time over a split held as a single uint8 tensor.

It knows nothing of files, plots or the CLI; vaekit.fit drives it and writes what each epoch gives.
The model it steps is any model family (vaekit.models.base.LatentVariableModel), or a
DistributedDataParallel wrapper of one: the forward pass goes through the wrapper, the loss is the family's
`objective` of its output.

Under torch.distributed (vaekit.distributed), `batch_size` is the global batch: each process trains on its
slice (`World.split`) of every global batch, cut from the epoch's one shuffled order; it draws the global
batch's noise and binarization from the (seed, epoch) streams, as one process would, and keeps its slice; its
loss is normalised by the global batch, so that DDP's average of the processes' gradients is the single
process's gradient. Losses are summed over the processes, the non-finite check is agreed by all of them, and
schedules count global steps. A world of one process runs exactly the single-process code.

Speed: each epoch gathers its shuffled images in one indexing op and then cuts batches as views;
the loss is reduced once per term (objectives.training_loss); Adam runs as one fused kernel;
the forward and backward run under bf16 autocast where the hardware multiplies bf16 natively
(weights, optimizer state and the loss stay fp32); torch.compile fuses the loss's elementwise work
where that pays (see `use_compile`), falling back to eager if compilation fails.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm import tqdm

from .acceleration import accumulator_dtype, autocast_dtype, compile_with_fallback
from .config import RECIPE_MIN_STEPS, TrainConfig
from .data.batches import epoch_order, prepare
from .distributed import World, world as current_world
from .errors import TrainingError
from .rng import derive_seed, make_generator
from .threads import BusyMonitor

# On CPU, compiling costs seconds up front (less once Inductor's on-disk cache is warm) and saves a few
# percent per step: it pays only for longer runs.
CPU_COMPILE_MIN_STEPS = 10_000
FEW_STEPS_PER_EPOCH = 10  # fewer optimizer steps than this per epoch are warned of (train.few_steps_warning)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam at the config's learning rate and beta2, with the fused kernel where the device has one."""
    kwargs = {"lr": config.lr, "betas": (0.9, config.beta2)}
    try:
        return torch.optim.Adam(model.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError):  # no fused kernel for this device or torch version
        return torch.optim.Adam(model.parameters(), foreach=True, **kwargs)


def warmup_steps_of(config: TrainConfig, total_steps: int) -> float:
    """How many of `total_steps` the linear warm-up lasts: the fraction `warmup` of them, and, when there is a
    warm-up, at least `warmup_min_steps` (all steps, if there are fewer).

    The fraction stays a float (MNIST's default is 93.8 steps) so that runs long enough for it to pass the
    floor keep their numbers; the floor is a whole number of steps, so a short run never overshoots the peak.
    """
    fraction = config.warmup * total_steps
    if 0 < fraction < config.warmup_min_steps:
        return min(config.warmup_min_steps, total_steps)
    return fraction


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of 0-based `step` of `total_steps`: linear warm-up, then constant or cosine to 0.

    Cosine decay: Loshchilov & Hutter 2017 (SGDR), without restarts.
    """
    warmup_steps = warmup_steps_of(config, total_steps)
    if step < warmup_steps:
        return config.lr * (step + 1) / warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def few_steps_warning(n_images: int, config: TrainConfig) -> str | None:
    """A line warning that an epoch over `n_images` is too few optimizer steps to learn much, or None."""
    per_epoch = math.ceil(n_images / config.batch_size)
    if per_epoch >= FEW_STEPS_PER_EPOCH:
        return None
    total = per_epoch * config.epochs
    advice = ("too few to learn much: use a smaller --batch-size or more --epochs" if total < RECIPE_MIN_STEPS
              else "a small training set, which a VAE overfits easily: watch the test loss")
    return (f"each epoch is only {per_epoch} optimizer step{'s' * (per_epoch != 1)} ({n_images} training images at "
            f"batch {config.batch_size}; {total} in all), {advice}")


def use_compile(config: TrainConfig, device: torch.device, total_steps: int) -> bool:
    """Whether to torch.compile the loss: always if asked; under auto, on CUDA, or on CPU for long runs."""
    if config.compile != "auto":
        return config.compile == "on"
    return device.type == "cuda" or (device.type == "cpu" and total_steps >= CPU_COMPILE_MIN_STEPS)


def epoch_seeds(seed: int, epoch: int) -> dict[str, int]:
    """The seeds of every random stream of `epoch`: its data order, its posterior noise, its binarization.

    Deriving them from (seed, epoch), rather than carrying generators across epochs, makes the state a
    resumed run needs at an epoch boundary just the model, the optimizer and the epoch number.
    """
    return {"order": derive_seed(seed, "order", epoch), "noise": derive_seed(seed, "noise", epoch),
            "binarize": derive_seed(seed, "binarize", epoch)}


class Trainer:
    """Owns the optimizer and the count of finished epochs; `train_epoch()` runs the next epoch.

    `state()` and `load_state()` give everything needed to continue exactly from an epoch boundary.
    A non-finite loss or gradient stops training with a TrainingError naming the epoch and step,
    before the epoch is counted (so before anything is saved).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, config: TrainConfig, binarize: str,
                 world: World | None = None):
        self.model = model
        self.world = world or current_world()  # the processes training together (a world of one by default)
        self.module = getattr(model, "module", model)  # the bare model inside a DDP wrapper
        self.module.require("train")
        if config.tc_beta is not None:
            self.module.require("tc")
        # (N, C, H, W) uint8, on the training device; or data.streamed.StreamedImages, which reads each batch of the
        # epoch's order from a dataset cache when sliced (the same batches, so the same weights)
        self.images = images
        self.config = config
        self.binarize = binarize
        self.latent_dim = self.module.latent_dim
        self.device = images.device
        self.optimizer = make_optimizer(model, config)
        self.steps_per_epoch = math.ceil(len(images) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.epoch = 0  # epochs finished
        # under --tc-beta, the last epoch's per-sample KL decomposition (vaekit.total_correlation), in nats
        self.last_tc_terms: dict[str, float] | None = None
        self.busy = BusyMonitor(torch.get_num_threads())  # the progress bar's "the CPU is busy" note (CPU only)
        self.amp_dtype = autocast_dtype(config.precision, self.device)  # bf16 keeps the fp32 learning curve
        # CUDA graphs ("reduce-overhead") remove the per-kernel launch cost that dominates small models on GPU;
        # not under DDP, whose gradient hooks run between the graph's kernels (plain Inductor there; unmeasured).
        mode = "reduce-overhead" if self.device.type == "cuda" and not self.world.distributed else None
        self._batch_loss = (compile_with_fallback(self._eager_loss, mode)
                            if use_compile(config, self.device, self.total_steps) else self._eager_loss)

    def _eager_loss(self, x: torch.Tensor, eps: torch.Tensor, kl_weight: torch.Tensor,
                    tc_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The objective summed over the batch, in nats (a 0-dim kl_weight tensor keeps compiled graphs reusable)."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            output = self.model(x, eps)
        if tc_weight is not None:  # --tc-beta: [loss, MI, TC, dimension-wise KL], summed over the batch
            return self.module.tc_objective(x, output, eps, dataset_size=len(self.images), kl_weight=kl_weight,
                                            tc_weight=tc_weight)
        return self.module.objective(x, output, eps, kl_weight=kl_weight, free_bits=self.config.free_bits)

    def kl_weight(self, step: int) -> float:
        """beta, ramped linearly from 0 over the first kl_warmup epochs (Bowman et al. 2016)."""
        warmup_steps = self.config.kl_warmup * self.steps_per_epoch
        return self.config.beta * min(1.0, (step + 1) / warmup_steps) if warmup_steps else self.config.beta

    def tc_weight(self, step: int) -> float:
        """tc_beta, the total correlation's weight (beta-TCVAE), ramped like beta over the KL warm-up."""
        warmup_steps = self.config.kl_warmup * self.steps_per_epoch
        return self.config.tc_beta * min(1.0, (step + 1) / warmup_steps) if warmup_steps else self.config.tc_beta

    @property
    def compiled(self) -> bool:
        """Whether the loss runs compiled (False after a failed compilation fell back to eager)."""
        return getattr(self._batch_loss, "is_compiled", lambda: False)()

    def train_epoch(self, progress: bool = False) -> float:
        """Train one epoch; returns the mean per-sample objective over it, in nats (the negative ELBO, unless
        beta, KL warm-up, free bits or the IWAE bound change what is minimised).

        vaekit's own noise comes from the epoch's seeded generators. Networks of a user's own may draw from torch's
        global generator (dropout): for the epoch it is seeded from (seed, epoch), and restored after, so such a
        run repeats and resumes bit for bit too."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            # each process its own stream (its images differ); the first keeps the single process's
            rank = () if self.world.rank == 0 else (self.world.rank,)
            torch.manual_seed(derive_seed(self.config.seed, "global", self.epoch + 1, *rank))
            return self._train_epoch(progress)

    def _train_epoch(self, progress: bool) -> float:
        epoch, n, batch_size = self.epoch + 1, len(self.images), self.config.batch_size
        seeds = epoch_seeds(self.config.seed, epoch)
        shuffled = self.images[epoch_order(n, self.config.seed, epoch).to(self.device)]  # one gather; batches are views
        noise = make_generator(seeds["noise"], self.device)
        flips = make_generator(seeds["binarize"], self.device) if self.binarize == "dynamic" else None
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        sync_each_step = self.device.type == "cpu"  # free on CPU; on GPU, check once per epoch instead
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.model.train()
        total = torch.zeros((), dtype=accumulator_dtype(self.device), device=self.device)
        tc = self.config.tc_beta is not None
        tc_total = torch.zeros(3, dtype=accumulator_dtype(self.device), device=self.device) if tc else None
        first_step = self.epoch * self.steps_per_epoch
        progress = progress and self.world.is_main()
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress)
        watch, shown = progress and self.device.type == "cpu", None
        self.busy.start(torch.get_num_threads())
        for i in bar:
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(self.config, first_step + i, self.total_steps)
            x = prepare(shuffled[i * batch_size:(i + 1) * batch_size], self.binarize, flips)
            shape = ((len(x), self.latent_dim) if self.config.iw_samples == 1
                     else (self.config.iw_samples, len(x), self.latent_dim))
            eps = torch.randn(shape, generator=noise, device=self.device)
            weights = (torch.tensor(self.kl_weight(first_step + i), device=self.device),)
            if tc:
                weights += (torch.tensor(self.tc_weight(first_step + i), device=self.device),)
            if self.world.distributed:
                loss_sum, share = self._slice_loss(x, eps, *weights)
            else:
                loss_sum = self._batch_loss(x, eps, *weights)
            if tc:
                loss_sum, tc_sums = loss_sum[0], loss_sum[1:]
                tc_total += tc_sums
            objective = loss_sum * share if self.world.distributed else loss_sum / len(x)
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            finite = torch.isfinite(loss_sum)
            if self.config.clip_grad:  # the norm comes free with clipping: check the gradients directly too
                finite = finite & torch.isfinite(torch.nn.utils.clip_grad_norm_(parameters, self.config.clip_grad))
            if self.world.distributed:
                finite = self.world.all(finite)  # one process's NaN stops every process, at the same step
            if sync_each_step:
                if not finite:
                    self._stop(epoch, i, parameters)
            else:
                first_bad = torch.where((first_bad < 0) & ~finite, i, first_bad)
            self.optimizer.step()
            total += loss_sum.detach()
            if watch and (hint := self.busy.step()) != shown:
                bar.set_postfix_str(hint or "", refresh=False)
                shown = hint
        if not sync_each_step and first_bad.item() >= 0:
            self._stop(epoch, first_bad.item(), parameters)
        if not all(torch.isfinite(p).all() for p in parameters):  # the last step's gradients, before saving
            self._stop(epoch, self.steps_per_epoch, parameters)
        self.epoch = epoch
        if tc:
            sums = self.world.sum(tc_total).tolist()
            self.last_tc_terms = {f"train_{name}": s / n for name, s in
                                  zip(("mutual_information", "total_correlation", "dimension_kl"), sums)}
        return self.world.sum(total).item() / n

    def _slice_loss(self, x: torch.Tensor, eps: torch.Tensor, *weights: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This process's summed loss over its slice of the global batch x (and of its noise eps), and the factor
        that turns it into its share of the global batch's mean: DDP averages the processes' gradients, so each
        weighs its sum by size / len(x), and the average is the gradient of the global batch's mean loss.

        A process whose slice is empty (a last batch smaller than the world) computes the batch's first image
        with weight 0: every process must join DDP's gradient reduction at every step.
        """
        part = self.world.split(len(x))
        mine = eps[..., part, :]  # (B', D) or (S, B', D)
        if part.start == part.stop:
            return self._batch_loss(x[:1], eps[..., :1, :], *weights) * 0.0, 0.0
        return self._batch_loss(x[part], mine, *weights), self.world.size / len(x)

    def _stop(self, epoch: int, step: int, parameters: list[torch.Tensor]):
        """TrainingError naming the step (0-based `step`) where training went non-finite.

        Gradients are not checked at every step (that costs 3% of an epoch on CPU): a non-finite gradient
        makes Adam's update, and so the weights, non-finite, which the next step's loss reveals. Finding
        non-finite weights when the loss fails therefore means the previous step's gradients failed.
        """
        if not all(torch.isfinite(p).all() for p in parameters):
            what, step = "the gradients", step - 1
        else:
            what = "the loss"
        error = TrainingError(f"training stopped: {what} became non-finite at epoch {epoch}, step {step + 1} of "
                              f"{self.steps_per_epoch}; lower the learning rate (--lr) or clip gradients (--clip-grad)")
        error.quiet = not self.world.is_main()  # every process stops here; the main one says why
        raise error

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything needed to continue from this epoch boundary: tensors, and JSON-ready metadata."""
        tensors = {f"model.{name}": t for name, t in self.module.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        for index, state in optimizer["state"].items():
            for name, t in state.items():
                tensors[f"optimizer.{index}.{name}"] = t if torch.is_tensor(t) else torch.tensor(t)
        groups = [{**g, "betas": list(g["betas"])} for g in optimizer["param_groups"]]
        meta = {"epoch": self.epoch, "param_groups": groups,
                "next_epoch_seeds": epoch_seeds(self.config.seed, self.epoch + 1),
                "threads": torch.get_num_threads()}  # float32 sums depend on it: a resume goes on with it
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore `state()` output (the model's weights, the optimizer, the epoch count)."""
        self.module.load_state_dict({k.removeprefix("model."): t for k, t in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, t in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = t
        groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"]]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.epoch = int(meta["epoch"])
