"""What the latent code knows: embeddings, and probes that measure how much label information they hold.

- kNN accuracy: each test latent takes the majority label of its k nearest training latents
  (Euclidean distance on posterior means).
- linear probe: multinomial logistic regression on standardized latents, fitted by L-BFGS with a
  small L2 penalty; the same classifier on raw pixels is the reference.
- semi-supervised: probes fitted on only n labelled training images (a seeded, class-balanced draw),
  as in Kingma et al. 2014's M1 setting: the linear probe, and label propagation (Zhou et al. 2004)
  over a kNN graph of all training latents, whose propagated labels then classify test latents by
  kNN. Test images never enter the graph.

A latent representation here is the posterior itself: its mean and log-variance side by side.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .choices import PROJECTIONS
from .data import latent_inputs
from .errors import ConfigError, DataError
from .evaluate import EVAL_BATCH
from .models import VAE
from .rng import make_generator


@torch.no_grad()
def embed(model: VAE, x: torch.Tensor, batch_size: int = EVAL_BATCH,
          part: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and log-variances (N, D) of model inputs x (N, C, H, W); `part`: the slice of the flat
    latent to keep (a hierarchical model's layer, `model.layer(name)[1]`), all of it by default."""
    was_training = model.training
    model.eval()
    mus, logvars = [], []
    for start in range(0, len(x), batch_size):
        posterior = model.encode(x[start:start + batch_size])
        mus.append(posterior.mu[:, part])
        logvars.append(posterior.logvar[:, part])
    model.train(was_training)
    return torch.cat(mus), torch.cat(logvars)


def posterior_features(model: VAE, images: torch.Tensor, binarize: str, seed: int) -> torch.Tensor:
    """Posterior means and log-variances side by side (N, 2D), on the CPU, of uint8 images (N, C, H, W)
    read as a run with this binarization reads them (`latent_inputs`)."""
    x = latent_inputs(images.to(next(model.parameters()).device), binarize, seed)
    return torch.cat(embed(model, x), 1).cpu()


@torch.no_grad()
def knn_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                 ks: tuple[int, ...] = (1, 5, 10), chunk: int = 512) -> dict[int, float]:
    """Accuracy of k-nearest-neighbour majority votes for each k; ties go to the nearer neighbours' label."""
    train, test = train.float(), test.float()
    k_max = max(ks)
    train_labels, test_labels = dense_labels(train_labels, test_labels)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    neighbours = []
    for start in range(0, len(test), chunk):
        distances = torch.cdist(test[start:start + chunk], train)
        neighbours.append(distances.topk(k_max, largest=False).indices)  # nearest first
    labels = train_labels[torch.cat(neighbours)]  # (N_test, k_max)
    result = {}
    for k in ks:
        votes = F.one_hot(labels[:, :k], n_classes).float()
        # rank-weighted tie-break: a tiny bonus for nearer neighbours, never enough to outvote a majority
        votes = votes * (1 + 1e-3 * torch.linspace(1, 0, k)[None, :, None])
        predicted = votes.sum(1).argmax(1)
        result[k] = (predicted == test_labels).float().mean().item()
    return result


def logistic_regression(features: torch.Tensor, labels: torch.Tensor, n_classes: int, l2: float = 1e-4,
                        steps: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardized features, fitted with L-BFGS.

    Returns (weight, bias, mean, std): predict with ((x - mean) / std) @ weight.T + bias.
    """
    x = features.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=steps, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach(), mean, std


def probe_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                   l2: float = 1e-4) -> float:
    """Test accuracy of a linear probe fitted on (train, train_labels)."""
    train_labels, test_labels = dense_labels(train_labels, test_labels)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    weight, bias, mean, std = logistic_regression(train, train_labels, n_classes, l2)
    predicted = (((test.double() - mean) / std) @ weight.T + bias).argmax(1)
    return (predicted == test_labels).double().mean().item()


def balanced_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of n labelled examples, as equal a number per class as n allows, drawn with `seed`."""
    classes = labels.unique()
    generator = make_generator(seed)
    picked = []
    for i, c in enumerate(classes.tolist()):
        members = (labels == c).nonzero().flatten()
        share = n // len(classes) + (1 if i < n % len(classes) else 0)
        picked.append(members[torch.randperm(len(members), generator=generator)[:share]])
    return torch.cat(picked).sort().values


@torch.no_grad()
def label_propagation(train: torch.Tensor, labelled: torch.Tensor, labels: torch.Tensor, test: torch.Tensor,
                      k: int = 10, alpha: float = 0.99, iterations: int = 40, chunk: int = 1024) -> torch.Tensor:
    """Predicted test labels from a few labelled training points spread over a kNN graph (Zhou et al. 2004).

    train: all training features (N, F); labelled: indices into train with `labels`; test: (M, F).
    Spreading: F <- alpha S F + (1 - alpha) Y, with S the symmetrically normalised, locally scaled
    Gaussian-weighted kNN graph; each test point then takes the k-nearest-neighbour vote of the
    training points' spread labels.
    """
    # Raw features, not standardized: a collapsed dimension's tiny variance would otherwise be blown up
    # into noise that swamps the distances. Weights use each point's own scale (its k-th neighbour's
    # distance; Zelnik-Manor & Perona 2004), so no global bandwidth can underflow them all to zero.
    x, t = train.float(), test.float()
    n, n_classes = len(x), int(labels.max()) + 1
    distances, neighbours = [], []
    for start in range(0, n, chunk):
        d, i = torch.cdist(x[start:start + chunk], x).topk(k + 1, largest=False)
        distances.append(d[:, 1:])  # drop the point itself
        neighbours.append(i[:, 1:])
    distance, neighbour = torch.cat(distances), torch.cat(neighbours)
    scale = distance[:, -1].clamp(min=1e-12)
    weight = torch.exp(-distance.pow(2) / (scale[:, None] * scale[neighbour]))
    rows = torch.arange(n).repeat_interleave(k)
    graph = torch.sparse_coo_tensor(torch.stack([rows, neighbour.flatten()]), weight.flatten(), (n, n),
                                    check_invariants=False)
    graph = (graph + graph.t()).coalesce()
    inv_sqrt_degree = torch.sparse.sum(graph, 1).to_dense().clamp(min=1e-12).pow(-0.5)
    index = graph.indices()
    values = graph.values() * inv_sqrt_degree[index[0]] * inv_sqrt_degree[index[1]]
    normalised = torch.sparse_coo_tensor(index, values, (n, n), check_invariants=False).coalesce()
    seeds = torch.zeros(n, n_classes)
    seeds[labelled, labels] = 1
    spread = seeds.clone()
    for _ in range(iterations):
        spread = alpha * torch.sparse.mm(normalised, spread) + (1 - alpha) * seeds
    spread_labels = spread.argmax(1)
    votes = []
    for start in range(0, len(t), chunk):
        nearest = torch.cdist(t[start:start + chunk], x).topk(k, largest=False).indices
        votes.append(F.one_hot(spread_labels[nearest], n_classes).sum(1).argmax(1))
    return torch.cat(votes)


def probe_report(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                 seed: int = 0, label_counts: tuple[int, ...] = (100, 1000), knn_dims: int | None = None) -> dict:
    """kNN (k = 1, 5, 10) and linear-probe accuracies with all labels, and probes with few labels.

    kNN uses the first `knn_dims` features (the posterior means, when features are means and
    log-variances side by side); the linear probe and label propagation use all of them.
    """
    train_labels, test_labels = dense_labels(train_labels, test_labels)
    near_train, near_test = train[:, :knn_dims], test[:, :knn_dims]
    result = {"knn": {str(k): v for k, v in knn_accuracy(near_train, train_labels, near_test, test_labels).items()},
              "linear": probe_accuracy(train, train_labels, test, test_labels), "few_labels": {}}
    for n in label_counts:
        chosen = balanced_subset(train_labels, n, seed)
        predicted = label_propagation(train, chosen, train_labels[chosen], test)
        result["few_labels"][str(n)] = {
            "linear": probe_accuracy(train[chosen], train_labels[chosen], test, test_labels, l2=1e-2),
            "label_propagation": (predicted == test_labels).float().mean().item(),
        }
    return result


def dense_labels(train_labels: torch.Tensor, test_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The labels as they are when they are class indices (0 <= label < number of images), else renumbered
    0, 1, 2... in sorted order: a negative label or one of 10^9 would index, or size, one-hot tables."""
    both = torch.cat([train_labels, test_labels])
    if len(both) == 0 or (both.min() >= 0 and both.max() < len(both)):
        return train_labels, test_labels
    dense = torch.unique(both, return_inverse=True)[1]
    return dense[:len(train_labels)], dense[len(train_labels):]



# The projections whose library is optional: its name, the module to import, and the requirement of
# vaekit's extra of the same name (pyproject.toml; a test keeps the two the same).
OPTIONAL_PROJECTIONS = {
    "tsne": ("t-SNE", "sklearn.manifold", "scikit-learn>=1.3"),
    "umap": ("UMAP", "umap", "umap-learn>=0.5"),
}


def project_2d(features: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Two coordinates per row of `features` (N, F): PCA, t-SNE (scikit-learn) or UMAP (umap-learn)."""
    if len(features) < 2:
        raise DataError(f"a 2-D projection needs at least 2 images, got {len(features)}")
    x = features.double()
    x = x - x.mean(0)  # centred, not standardized: an unused dimension should not count as much as a used one
    if method == "pca":
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        return (x @ v[:2].T).numpy()
    if method == "tsne":
        TSNE = optional_module(method).TSNE
        perplexity = min(30, len(x) - 1)  # t-SNE needs fewer neighbours than points
        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(x.numpy())
    if method == "umap":
        UMAP = optional_module(method).UMAP
        return UMAP(n_components=2, random_state=seed).fit_transform(x.numpy())
    raise ConfigError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")


def optional_module(method: str):
    """The library an optional projection needs, or a ConfigError that gives the pip command installing it."""
    import importlib

    title, module, requirement = OPTIONAL_PROJECTIONS[method]
    try:
        return importlib.import_module(module)
    except ImportError:
        package = requirement.partition(">=")[0]
        raise ConfigError(f"{title} needs {package}, which is not installed: pip install '{requirement}' "
                          f"(or vaekit's [{method}] extra: pip install -e '.[{method}]' in a clone)") from None
