"""The named choices of vaekit's options outside the run config (vaekit.config holds those), and the defaults
the command line shows, in a module that imports nothing heavy: the CLI builds its parser, and answers
--help, without loading torch. The modules that act on a choice import it from here."""

from __future__ import annotations

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # vaekit.devices.resolve_device
INTERPOLATIONS = ("linear", "slerp")  # vaekit.generate.interpolate
PROJECTIONS = ("pca", "tsne", "umap")  # vaekit.representation.project_2d
SCORE_METHODS = ("elbo", "iwae", "recon", "mse", "complexity", "ratio")  # vaekit.anomaly.anomaly_scores
# how a detector's scores are measured against normal ones, and several runs' combined: anomaly.mixture_scores,
# typical_scores (one-sided, "typical"; two-sided, "typical-set")
MIXTURE_RULES = ("density", "typical", "typical-set")
# what `vaekit calibrate` and vaekit.Detector pick unless told: the complexity-corrected ELBO, by the density rule
# (the score as it is), which holds up against simple out-of-distribution images (docs/anomaly-detection.md)
CALIBRATE_METHOD, CALIBRATE_RULE = "complexity", "density"
INVERT_MODES = ("auto", "on", "off")  # vaekit.data.preparation: new images' polarity against the training images'
LATENT_BITS = 8  # vaekit.compress: bits per latent dimension (256 bins), the default of compress --latent-bits
QUALITY_CLASSIFIERS = ("mnist", "fashion-mnist")  # vaekit.classifier.CLASSIFIERS: the classifiers vaekit ships
