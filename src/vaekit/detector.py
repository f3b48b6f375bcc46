"""An anomaly detector: a trained run, or several scoring as one mixture, with its score, rule and threshold.

`Detector` is what `vaekit score` and `vaekit calibrate` call; a notebook or a server calls the same:

    detector = Detector(load_run("runs/fours"))
    detector.calibrate()                                  # on the run's held-out images
    detector.save()                                       # runs/fours/threshold.json
    result = Detector.load("runs/fours").score(images)    # an ImageSet, or model inputs
    result.scores, result.anomaly                         # (N,) each

The compute (the scores, the two mixture rules, the threshold's fit) is `vaekit.anomaly`'s; this module
holds what surrounds it: which runs, which score and rule, the threshold, and where it is stored.
Bad choices raise `ConfigError`, unreadable runs `RunError`, missing data `DataError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .anomaly import (anomaly_scores, calibrate, check_background, check_mixable, mixture_scores, typical_reference,
                      typical_scores)
from .choices import CALIBRATE_METHOD, CALIBRATE_RULE, MIXTURE_RULES, SCORE_METHODS
from .complexity import LN2, fit_rate, png_bits
from .config import MAX_IW_SAMPLES
from .data import ImageSet
from .distributed import world as current_world
from .errors import ConfigError, DataError, RunError
from .runs import Run, load_run, read_threshold, write_threshold

HELD_OUT = "the run's held-out images"  # what threshold.json's "data" says when no images were given
TYPICAL_RULES = ("typical", "typical-set")  # the rules that measure scores against a run's held-out ones


@dataclass(frozen=True)
class Scores:
    """A detector's verdict on N images: their scores (higher is more anomalous) and, when it has a
    threshold, the decisions (score above it)."""

    scores: torch.Tensor  # (N,)
    anomaly: torch.Tensor | None  # (N,) bool, None without a threshold
    threshold: float | None


class Detector:
    """One run, or several as one mixture (`mixture`: more runs, or their paths), scoring images by `method`
    (SCORE_METHODS; by default complexity for a run alone, elbo for a mixture: `default_method`) and combining
    the runs' scores by `combine` (MIXTURE_RULES); `threshold`, if given,
    decides which scores are anomalies. `data_dir` is where the runs' training data is found, which the
    typical rules need for a run's held-out images unless a calibration stored its reference; `progress`
    shows a bar on stderr. Runs given as paths are loaded on `device` (the mixture's, on the first run's).
    `background`: the background run (or its path) of the ratio score (vaekit.background).
    """

    def __init__(self, run: Run | str | Path, mixture: Sequence[Run | str | Path] = (), *,
                 method: str | None = None, combine: str = CALIBRATE_RULE, iw_samples: int = 100,
                 threshold: float | None = None,
                 data_dir: str | Path | None = None, progress: bool = False, device: torch.device | str = "cpu",
                 background: Run | str | Path | None = None):
        method = method or default_method(len(mixture) > 0)
        if method not in SCORE_METHODS:
            raise ConfigError(f"unknown score {method!r}; choose one of {', '.join(SCORE_METHODS)}")
        if combine not in MIXTURE_RULES:
            raise ConfigError(f"unknown rule {combine!r}; choose one of {', '.join(MIXTURE_RULES)}")
        if isinstance(iw_samples, bool) or not isinstance(iw_samples, int) or not 1 <= iw_samples <= MAX_IW_SAMPLES:
            raise ConfigError(f"iw_samples must be an integer from 1 to {MAX_IW_SAMPLES:,}, got {iw_samples!r}")
        if threshold is not None and not math.isfinite(threshold):
            raise ConfigError(f"the threshold must be a finite number, got {threshold!r}")
        self.method, self.combine, self.iw_samples, self.threshold = method, combine, iw_samples, threshold
        self.data_dir, self.progress = data_dir, progress
        self.runs = open_mixture(run if isinstance(run, Run) else load_run(run, device), mixture, method, combine)
        self.background = open_background(self.runs[0], background, method)
        self.calibration: dict | None = None  # threshold.json's record: read by `load`, or made by `calibrate`
        self._references: dict[str, list[float]] | None = None  # the typical rule's, once `scores` needed them
        self._rates: dict[str, float] | None = None  # the complexity score's, once needed

    @classmethod
    def load(cls, run: Run | str | Path, mixture: Sequence[Run | str | Path] = (), *, method: str | None = None,
             combine: str | None = None, iw_samples: int = 100, threshold: float | None = None,
             data_dir: str | Path | None = None, progress: bool = False,
             device: torch.device | str = "cpu", background: Run | str | Path | None = None) -> Detector:
        """The detector calibrated in `run` (RUN/threshold.json): its method, rule, background and threshold,
        unless given.

        A run without a calibration scores by elbo with no threshold. A `method`, `mixture`, `combine` or
        `background` other than the calibrated ones needs a `threshold` of its own (ConfigError otherwise).
        A threshold.json without "combine" was calibrated by the density rule (the only one of a single run
        before the typical-set rule), so files written before it keep their meaning.
        """
        run = run if isinstance(run, Run) else load_run(run, device)
        calibration = read_threshold(run.path)
        # the calibrated method, where the calibration is for these runs; else elbo alone, a mixture's default
        same_runs = calibration is not None and (len(calibration.get("mixture", [])) > 0) == (len(mixture) > 0)
        method = method or (calibration["method"] if same_runs else default_method(len(mixture) > 0)
                            if calibration else "elbo")
        calibrated_rule = calibration.get("combine", "density") if calibration else "density"
        rule = combine or (calibrated_rule if mixture or calibrated_rule != "typical" else "density")
        calibrated_background = (calibration or {}).get("background")
        if background is None and method == "ratio" and calibrated_background is not None:
            background = calibrated_background
        detector = cls(run, mixture, method=method, combine=rule, iw_samples=iw_samples, threshold=threshold,
                       data_dir=data_dir, progress=progress, background=background)
        if threshold is None and calibration is not None:
            if sorted(calibration.get("mixture", [])) != sorted(detector.mixture_names):  # a mixture has no order
                calibrated_for = (f"--mixture {' '.join(calibration['mixture'])}" if calibration.get("mixture")
                                  else "the run alone")
                raise ConfigError(f"the run's threshold was calibrated for {calibrated_for}; pass --threshold or "
                                  "calibrate again with this --mixture")
            if calibration["method"] != method:
                raise ConfigError(f"the run's threshold was calibrated for --method {calibration['method']}, not "
                                  f"{method}; pass --threshold or calibrate again")
            if calibrated_rule != rule:
                raise ConfigError(f"the run's threshold was calibrated for --combine {calibrated_rule}, not {rule}; "
                                  "pass --threshold or calibrate again")
            if detector.background_name != calibrated_background:
                raise ConfigError(f"the run's threshold was calibrated with the background run "
                                  f"{calibrated_background}, not {detector.background_name}; pass --threshold or "
                                  "calibrate again")
            detector.threshold = calibration["threshold"]
        detector.calibration = calibration
        return detector

    @property
    def background_name(self) -> str | None:
        """The background run's resolved path, as a calibration records it; None without one."""
        return None if self.background is None else reference_key(self.background)

    @property
    def mixture_names(self) -> list[str]:
        """The runs mixed with the first, as a calibration records them: resolved paths, in order."""
        return [reference_key(m) for m in self.runs[1:]]

    def key(self, member: Run) -> str:
        """What a calibration's per-run records (complexity rates, typical references) are keyed by: OWN for the
        calibrated run itself, so that its threshold.json still holds when the run is moved or copied, and the
        resolved path of a mixture's other runs."""
        return OWN if member is self.runs[0] else reference_key(member)

    def own_keyed(self, stored: dict) -> dict:
        """A stored per-run record with the calibrated run's entry under OWN: files written before OWN keyed it by
        the run's resolved path, which still names it where the run has not moved."""
        own = reference_key(self.runs[0])
        return {OWN if key == own else key: value for key, value in stored.items()}

    def in_order(self, references: dict | None) -> list | None:
        """Per-run references (by `key`) as a list in the runs' order; None stays None."""
        return None if references is None else [references[self.key(m)] for m in self.runs]

    def inputs(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """Images as the runs take them (`Run.inputs` of the first run; a mixture's runs prepare alike);
        a tensor is taken to be model inputs already."""
        return self.runs[0].inputs(images) if isinstance(images, ImageSet) else images

    def scores(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """The combined score (N,) of each image; higher is more anomalous."""
        x = self.inputs(images)
        if self.method == "complexity" and self._rates is None:
            self._rates = self.complexity_rates(self.calibration)
        if self.combine in TYPICAL_RULES and self._references is None:
            self._references = self.references(self.calibration)
        return combine_scores([self.member_scores(m, x) for m in self.runs], self.in_order(self._references),
                              self.combine)

    def score(self, images: ImageSet | torch.Tensor) -> Scores:
        """The images' scores and, if the detector has a threshold, which lie above it."""
        scores = self.scores(images)
        anomaly = None if self.threshold is None else scores.double() > self.threshold
        return Scores(scores, anomaly, self.threshold)

    def calibrate(self, images: ImageSet | torch.Tensor | None = None, quantile: float = 0.99,
                  data: str | None = None) -> dict:
        """Fit the threshold at `quantile` of normal images' scores (`anomaly.calibrate`: on half of them, its
        false-positive rate measured on the other half), and return the record `save` stores.

        The normal images are the first run's held-out set unless `images` are given (for a mixture, give
        normal images of every kind); `data` says in the record what they were.
        """
        x = held_out_inputs(self.runs[0], self.data_dir) if images is None else self.inputs(images)
        self._rates = None
        if self.method == "complexity":  # a lone run's rate on the normal images given, a mixture's on its own
            self._rates = self.complexity_rates() if len(self.runs) > 1 else {
                OWN: self.fit_rate(self.runs[0], x)}
        each = [self.member_scores(m, x) for m in self.runs]
        references = None
        if self.combine in TYPICAL_RULES:  # on the run's own held-out set, its scores are its reference's
            references = self.references(measured={} if images is not None else {OWN: each[0]})
        scores = combine_scores(each, self.in_order(references), self.combine)
        if not bool(torch.isfinite(scores).all()):
            raise RunError(f"{self.runs[0].path} gives {int((~torch.isfinite(scores)).sum())} of {len(scores)} "
                           "normal images a non-finite score; no threshold can be fitted on them")
        try:
            result = calibrate(scores.cpu(), quantile, self.runs[0].config.train.seed)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        result.update(method=self.method, iw_samples=self.iw_samples if self.method == "iwae" else None,
                      data=data or (HELD_OUT if images is None else "images given to Detector.calibrate"),
                      mixture=self.mixture_names,
                      **({"combine": self.combine} if len(self.runs) > 1 or self.combine != "density" else {}),
                      **({"background": self.background_name} if self.background is not None else {}),
                      **({"complexity_rates": self._rates} if self._rates else {}),
                      **({"references": references} if references else {}))
        self.calibration, self.threshold, self._references = result, result["threshold"], references
        return result

    def member_scores(self, member: Run, x: torch.Tensor) -> torch.Tensor:
        """One of the detector's runs' scores of model inputs x, by the detector's method."""
        rate = self._rates[self.key(member)] if self.method == "complexity" else LN2
        return member_scores(member, x, self.method, self.iw_samples, self.progress, self.background, rate)

    def complexity_rates(self, calibration: dict | None = None) -> dict[str, float]:
        """The complexity score's exchange rate of each run (`complexity.fit_rate`: nats of its elbo score per
        bit of PNG length), by its resolved path: from `calibration` when it stored them for the same runs (a
        lone run's fitted on the images it was calibrated on), measured on each run's held-out images otherwise."""
        stored = self.own_keyed((calibration or {}).get("complexity_rates", {}))
        if all(self.key(m) in stored for m in self.runs):
            return {self.key(m): stored[self.key(m)] for m in self.runs}
        rates = {}
        for m in self.runs:
            held_out = self.held_out(m, f"--method complexity measures {m.path}'s exchange rate on",
                                     "with this --method stores it")
            rates[self.key(m)] = self.fit_rate(m, held_out)
        return rates

    def held_out(self, member: Run, measures: str, calibrate_stores: str) -> torch.Tensor:
        """A run's held-out model inputs, which a reference is measured on; without its training data, a DataError
        that says what needed them (`measures` ... its held-out images) and what `vaekit calibrate` stores instead."""
        try:
            return held_out_inputs(member, self.data_dir)
        except DataError as e:
            raise DataError(f"{measures} its held-out images, which need its training data ({e}); `vaekit calibrate` "
                            f"{calibrate_stores}") from None

    def fit_rate(self, member: Run, x: torch.Tensor) -> float:
        """`complexity.fit_rate` of a run on normal model inputs x."""
        try:
            return fit_rate(member_scores(member, x, "elbo", self.iw_samples, self.progress), png_bits(x))
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def save(self) -> Path:
        """Store the calibration in the first run (RUN/threshold.json), where `Detector.load` finds it."""
        if self.calibration is None:
            raise RunError("the detector has no calibration to save; calibrate it first")
        return write_threshold(self.runs[0].path, self.calibration)

    def references(self, calibration: dict | None = None, measured: dict | None = None) -> dict[str, list[float]]:
        """The typical rule's reference of each run, [mean, std] of its scores of its own held-out images
        (its dataset's test split, or the validation share of its images), by its resolved path.

        Taken from `calibration` when it stored them for the same runs, method and samples, so that scoring
        needs neither the runs' training data nor the time to score it; measured otherwise, except for the
        runs whose held-out scores `measured` already holds (by `key`).
        """
        stored = self.own_keyed((calibration or {}).get("references", {}))
        same_method = calibration is not None and calibration["method"] == self.method and (
            self.method != "iwae" or calibration.get("iw_samples") == self.iw_samples) and (
            calibration.get("background") == self.background_name)
        if same_method and all(self.key(m) in stored for m in self.runs):
            return {self.key(m): stored[self.key(m)] for m in self.runs}
        references = {}
        for m in self.runs:
            held_out_scores = (measured or {}).get(self.key(m))
            if held_out_scores is None:
                held_out = self.held_out(m, f"--combine typical measures {m.path} against",
                                         "with this --combine and --method stores what it needs")
                held_out_scores = self.member_scores(m, held_out)
            try:
                references[self.key(m)] = list(typical_reference(held_out_scores))
            except ValueError as e:
                raise ConfigError(str(e)) from None
        return references


def default_method(mixture: bool) -> str:
    """The score a detector uses unless told: CALIBRATE_METHOD for a run alone; elbo for a mixture, whose
    default density rule needs a score in nats."""
    return "elbo" if mixture else CALIBRATE_METHOD


def open_mixture(run: Run, mixture: Sequence[Run | str | Path], method: str, rule: str) -> list[Run]:
    """`run` and the `mixture` runs (paths loaded on its device), checked to score as one mixture by `rule`."""
    if not mixture:
        if rule == "typical":  # one-sided, a lone run's z-score ranks as its score does
            raise ConfigError(f"--combine {rule} combines the runs of --mixture; give --mixture too (or --combine "
                              "typical-set, which applies to one run)")
        return [run]
    device = next(run.model.parameters()).device
    members = [run, *(m if isinstance(m, Run) else load_run(m, device) for m in mixture)]
    try:
        check_mixable({str(m.path): m.config for m in members}, method, density=rule == "density")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return members


def open_background(run: Run, background: Run | str | Path | None, method: str) -> Run | None:
    """The ratio score's background run (a path loaded on `run`'s device), checked to score `run`'s inputs."""
    if method != "ratio":
        if background is not None:
            raise ConfigError(f"a background run is for --method ratio, not {method}")
        return None
    if background is None:
        raise ConfigError("--method ratio needs --background RUN: a run trained on the training images with a share "
                          "of their pixels replaced by noise (docs/anomaly-detection.md)")
    if not isinstance(background, Run):
        background = load_run(background, next(run.model.parameters()).device)
    try:
        check_background(run.config, background.config, str(background.path))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return background


def member_scores(member: Run, x: torch.Tensor, method: str, iw_samples: int, progress: bool = False,
                  background: Run | None = None, complexity_rate: float = LN2) -> torch.Tensor:
    """One run's anomaly scores of model inputs x (with method ratio, against the `background` run; with
    complexity, at `complexity_rate`)."""
    world = current_world()  # under torchrun, the processes share the images (vaekit.distributed)
    return anomaly_scores(member.model, x, method, member.config.train.seed, iw_samples,
                          progress=progress and world.is_main(), world=world,
                          background=None if background is None else background.model,
                          complexity_rate=complexity_rate)


def combine_scores(scores: list[torch.Tensor], references: list | None, rule: str = "density") -> torch.Tensor:
    """The members' scores of the same images as one score by `rule`: a typical rule needs each member's reference,
    in the same order (from `Detector.references`); by the density rule a lone member's scores are as they are."""
    if rule in TYPICAL_RULES:
        return typical_scores(scores, references, two_sided=rule == "typical-set")
    return scores[0] if len(scores) == 1 else mixture_scores(scores)


def held_out_inputs(run: Run, data_dir: str | Path | None = None) -> torch.Tensor:
    """The run's held-out images (its dataset's test split, or the validation share of its images) as its inputs."""
    return run.inputs(run.held_out(data_dir))


OWN = "."  # the calibrated run's own key in its threshold.json's per-run records (Detector.key)


def reference_key(member: Run) -> str:
    return str(Path(member.path).resolve())
