"""The only module that draws: image grids and training curves, written as PNG files atomically."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write_bytes
from .errors import ConfigError

# Pixels in one picture (all of a GIF's frames together), checked before anything is drawn: --scale 32 on a
# 10,000-image grid would otherwise need tens of GB. 64 M is an 8,000-pixel square (64 MNIST images at --scale 32).
MAX_PICTURE_PIXELS = 64_000_000


def check_picture_pixels(height: int, width: int, frames: int = 1) -> None:
    """ConfigError if a picture of `frames` frames, each height x width pixels, exceeds MAX_PICTURE_PIXELS."""
    if frames * height * width > MAX_PICTURE_PIXELS:
        size = f"{frames:,} frames of " if frames > 1 else ""
        raise ConfigError(f"the picture would be {size}{width:,} x {height:,} pixels; at most "
                          f"{MAX_PICTURE_PIXELS:,} in all (a smaller --scale, or fewer images)")


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.5,
               scale: int = 1) -> np.ndarray:
    """Tile images (N, C, H, W) in [0, 1] into one uint8 array (rows, cols) or (rows, cols, 3), nrow per row."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"image grids need 1 or 3 channels, got {c}")
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    check_picture_pixels((nrows * (h + padding) + padding) * scale, (ncol * (w + padding) + padding) * scale)
    grid = torch.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for i in range(n):
        top, left = padding + (i // ncol) * (h + padding), padding + (i % ncol) * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    pixels = (grid * 255).round().to(torch.uint8)
    if scale > 1:
        pixels = pixels.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    array = pixels.permute(1, 2, 0).numpy()
    return array[..., 0] if c == 1 else array


TILE_PIXELS, PICTURE_PIXELS = 96, 1600  # the default scale: images about this big, pictures at most this


def auto_scale(image_side: int, picture_side: int) -> int:
    """The default integer upscale of a picture of images `image_side` pixels a side whose longest side is
    `picture_side` pixels: each image about TILE_PIXELS (28 -> 4), the picture at most PICTURE_PIXELS."""
    return max(1, min(math.ceil(TILE_PIXELS / image_side), PICTURE_PIXELS // picture_side))


def grid_scale(images: torch.Tensor, nrow: int, padding: int = 2, scale: int | None = None) -> int:
    """`scale`, or when None the `auto_scale` of `image_grid(images, nrow, padding)`."""
    if scale is not None:
        return scale
    n, _, h, w = images.shape
    ncol = min(nrow, n)
    return auto_scale(max(h, w), max(-(-n // ncol) * (h + padding) + padding, ncol * (w + padding) + padding))


def labelled_grid(images: torch.Tensor, nrow: int, *, scale: int | None = None, padding: int = 2,
                  title: str | None = None, row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, captions: Sequence[str] | None = None,
                  each_to_white: bool = False) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] tiled `nrow` per row on white, with text: a title above, a label
    left of each row and above each column, a caption (lines split by newlines) under each image.

    `scale` upscales each pixel (nearest; default `grid_scale`); `padding` is the white gap between
    images, in image pixels. `each_to_white` scales each image to its brightest pixel, for pictures
    whose images are faint. Returns uint8 (H, W), or (H, W, 3) for colour images.
    """
    from PIL import ImageDraw

    images = images.detach().float().clamp(0, 1).cpu()
    if each_to_white:
        images = images / images.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    n, c, h, w = images.shape
    scale = grid_scale(images, nrow, padding, scale)
    ncol, gap = min(nrow, n), padding * scale
    nrows = -(-n // ncol)
    th, tw = h * scale, w * scale
    check_picture_pixels(nrows * th, ncol * tw)  # the tiles alone; the labels' size is checked below
    font = _font(tw)
    ascent, descent = font.getmetrics()
    line = ascent + descent + 2
    measure = lambda text: font.getbbox(text)[2] if text else 0  # noqa: E731
    left = max(map(measure, row_labels)) + 2 * gap + 4 if row_labels else 0
    caption_lines = max(len(t.split("\n")) for t in captions) if captions else 0
    below = caption_lines * line + (gap if captions else 0)
    width = left + ncol * (tw + gap) + gap
    title_lines = _wrap(title, measure, width - 2 * gap) if title else []
    top = len(title_lines) * line + (gap if title else 0) + (line if col_labels else 0)
    height = top + nrows * (th + below + gap) + gap
    check_picture_pixels(height, width)
    mode, white, black = ("L", 255, 0) if c == 1 else ("RGB", (255, 255, 255), (0, 0, 0))
    canvas = Image.new(mode, (width, height), white)
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(title_lines):
        draw.text((gap, gap + i * line), text, fill=black, font=font)
    for i in range(n):
        x, y = left + gap + (i % ncol) * (tw + gap), top + gap + (i // ncol) * (th + below + gap)
        canvas.paste(Image.fromarray(image_grid(images[i:i + 1], nrow=1, padding=0, scale=scale)), (x, y))
        if captions:
            for j, text in enumerate(captions[i].split("\n")):
                text = _fit(text, measure, tw + gap)
                draw.text((x + (tw - measure(text)) / 2, y + th + 2 + j * line), text, fill=black, font=font)
    for col, text in enumerate(col_labels or ()):
        draw.text((left + gap + col * (tw + gap) + (tw - measure(text)) / 2, top - line), text, fill=black, font=font)
    for row, text in enumerate(row_labels or ()):
        y = top + gap + row * (th + below + gap) + (th - line) / 2
        draw.text((left - gap - 4 - measure(text), y), text, fill=black, font=font)
    return np.asarray(canvas).copy()


def traverse_picture(images: torch.Tensor, dims: Sequence[int], values: Sequence[float], base: str,
                     scale: int | None = None) -> np.ndarray:
    """`generate.traverse`'s images (len(dims) * len(values), C, H, W), labelled: each row with its
    dimension (z3), each column with the value it is given, and what the other dimensions hold."""
    return labelled_grid(images, nrow=len(values), scale=scale, row_labels=[f"z{d}" for d in dims],
                         col_labels=[value_label(v) for v in values],
                         title=f"Each row sets one latent dimension to the value above its column; the others keep "
                               f"the posterior mean of {base}. Most used dimension (by KL) first.")


def manifold_picture(images: torch.Tensor, dims: tuple[int, int], values: Sequence[float],
                     scale: int | None = None, down_values: Sequence[float] | None = None,
                     sampler: str | None = None) -> np.ndarray:
    """`generate.manifold`'s n x n images, labelled with the two dimensions' values, each image scaled to
    its brightest pixel: decoded means far from the data are faint, and at full scale their shapes show.
    With `sampler`, `generate.plane_manifold`'s: `values` across and `down_values` down, along the sampler's
    first two principal directions (dims unused)."""
    labels = [value_label(v) for v in values]
    down = labels if down_values is None else [value_label(v) for v in down_values]
    title = (f"z{dims[0]} across, z{dims[1]} down (the prior's 5% to 95% quantiles; the other dimensions 0)"
             if sampler is None else
             f"The {sampler} sampler's first principal direction across, its second down, through the mean of its "
             "draws (their 5% to 95% quantiles along each, from that mean)")
    return labelled_grid(images, nrow=len(values), scale=scale, padding=1, each_to_white=True,
                         col_labels=labels, row_labels=down[::-1],
                         title=f"{title}; each image scaled to its brightest pixel")


def extremes_picture(images: torch.Tensor, scores: Sequence[float], names: Sequence[str], n: int,
                     scale: int | None = None) -> np.ndarray:
    """The `n` most anomalous images above the `n` least: images (2n, C, H, W) by descending score,
    each captioned with its score and its name, in two titled blocks of up to 8 a row."""
    captions = [f"{score:.1f}\n{name}" for score, name in zip(scores, names)]
    ncol = min(8, n)
    scale = grid_scale(images, ncol, scale=scale)
    return stack_pictures([
        labelled_grid(images[:n], ncol, scale=scale, captions=captions[:n],
                      title=f"The {n} most anomalous (highest score first): score, then name"),
        labelled_grid(images[n:], ncol, scale=scale, captions=captions[n:],
                      title=f"The {n} least anomalous (lowest score last)")])


def value_label(value: float) -> str:
    """A latent value as a label: signed, to two decimals, without trailing zeros (-2.25, +1.5, 0)."""
    text = f"{value:+.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("+0", "-0") else text


def stack_pictures(pictures: Sequence[np.ndarray]) -> np.ndarray:
    """Pictures (uint8, all gray or all colour) one above another, left-aligned on white."""
    width = max(p.shape[1] for p in pictures)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1])) + ((0, 0),) * (p.ndim - 2), constant_values=255)
              for p in pictures]
    return np.concatenate(padded)


def _font(tile_width: int):
    """Text about an eighth of an image wide, 10 to 16 pixels (Pillow's own font: no system font needed)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=min(16, max(10, round(tile_width / 8))))


def _wrap(text: str, measure, width: int) -> list[str]:
    """Words of `text` in lines no wider than `width` (a longer word keeps a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and measure(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _fit(text: str, measure, width: int) -> str:
    """`text`, shortened from the left with an ellipsis until it is no wider than `width`."""
    while len(text) > 1 and measure(text) > width:
        text = "\u2026" + text[2:]
    return text


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array (H, W) or (H, W, 3) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def grid_png(images: torch.Tensor, nrow: int = 8, padding: int = 2, scale: int = 1) -> bytes:
    """Images (N, C, H, W) in [0, 1] as one PNG grid with `nrow` images per row."""
    return png_bytes(image_grid(images, nrow=nrow, padding=padding, scale=scale))


def save_image_grid(path: str | Path, images: torch.Tensor, nrow: int = 8, scale: int | None = 1,
                    padding: int = 2) -> Path:
    """Write images (N, C, H, W) in [0, 1] as one PNG grid with `nrow` images per row, each pixel
    repeated `scale` times (None: `grid_scale`)."""
    scale = grid_scale(images, nrow, padding, scale)
    return atomic_write_bytes(path, grid_png(images, nrow=nrow, padding=padding, scale=scale))


def save_picture(path: str | Path, picture: np.ndarray) -> Path:
    """Write a uint8 picture (H, W) or (H, W, 3), such as `labelled_grid`'s, as PNG."""
    return atomic_write_bytes(path, png_bytes(picture))


def save_loss_curve(path: str | Path, metrics: Sequence[dict]) -> Path:
    """Write `loss_curve_png` to `path`."""
    return atomic_write_bytes(path, loss_curve_png(metrics))


def loss_curve_png(metrics: Sequence[dict]) -> bytes:
    """Plot train and test loss per epoch from metrics rows (keys epoch, train_loss, test_loss)."""
    from matplotlib.figure import Figure  # not pyplot: no global backend or figure state

    epochs = [row["epoch"] for row in metrics]
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(epochs, [row["train_loss"] for row in metrics], marker="o", label="train")
    ax.plot(epochs, [row["test_loss"] for row in metrics], marker="o", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats per image)")
    ax.set_title("Training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return figure_png(fig)


def save_kl_plot(path: str | Path, metrics: Sequence[dict], title: str = "KL per latent dimension") -> Path:
    """Write `kl_plot_png` to `path`."""
    return atomic_write_bytes(path, kl_plot_png(metrics, title))


def kl_plot_png(metrics: Sequence[dict], title: str = "KL per latent dimension") -> bytes:
    """`kl_plot_figure` as PNG bytes."""
    return figure_png(kl_plot_figure(metrics, title))


# a bar is marked as collapsed below COLLAPSED_KL nats, or below COLLAPSED_SHARE of the largest bar,
# where it cannot be seen
COLLAPSED_KL, COLLAPSED_SHARE = 0.01, 0.01
LABELLED_DIMS = 40  # up to this many dimensions, every one is named and its bar's value written on it


def kl_plot_figure(metrics: Sequence[dict], title: str = "KL per latent dimension"):
    """Two panels from a run's metrics: KL per dimension over the epochs (a heat map), and at the end (bars).

    Dimensions are ordered by their final KL and named as eval prints them (z0 is the first latent
    dimension); one near zero is collapsed (the decoder ignores it), and its bar gets a marker.
    """
    from matplotlib.figure import Figure

    rows = [row for row in metrics if row.get("kl_per_dim")]
    if not rows:
        raise ValueError("these metrics hold no KL per dimension (a VampPrior's KL has none)")
    kl = np.array([row["kl_per_dim"] for row in rows])  # (epochs, D)
    order = np.argsort(-kl[-1], kind="stable")
    final, dims = kl[-1, order], len(order)
    names = [f"z{d}" for d in order]
    shown = range(0, dims, max(1, -(-dims // LABELLED_DIMS)))  # every name, or every n-th of many
    fig = Figure(figsize=(max(10, 4 + 0.28 * min(dims, LABELLED_DIMS)), 4.2), dpi=100)
    heat_ax, bar_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    image = heat_ax.imshow(kl[:, order].T, aspect="auto", origin="lower", cmap="viridis",
                           extent=(rows[0]["epoch"] - 0.5, rows[-1]["epoch"] + 0.5, -0.5, dims - 0.5))
    heat_ax.set_yticks(list(shown), [names[i] for i in shown], fontsize=7)
    heat_ax.set_xlabel("epoch")
    heat_ax.set_ylabel("latent dimension (by final KL)")
    heat_ax.set_title(title)
    fig.colorbar(image, ax=heat_ax, label="nats")
    bar_ax.bar(range(dims), final, color="tab:blue")
    bar_ax.set_xticks(list(shown), [names[i] for i in shown], rotation=90, fontsize=7)
    top = max(final.max(), 1e-12)
    collapsed = np.flatnonzero(final < max(COLLAPSED_KL, COLLAPSED_SHARE * top))
    if len(collapsed):
        bar_ax.plot(collapsed, np.zeros(len(collapsed)), linestyle="none", marker="^", markersize=6,
                    color="tab:red", clip_on=False, zorder=3,
                    label=f"near zero: collapsed ({len(collapsed)} of {dims})")
        bar_ax.legend(fontsize=8, loc="upper right")
    if dims <= LABELLED_DIMS:
        for i, value in enumerate(final):
            bar_ax.annotate(f"{value:.2g}", (i, value), xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", rotation=90, fontsize=6)
    bar_ax.set_ylim(0, top * 1.18)  # room for the values written above the bars
    bar_ax.set_xlim(-0.7, dims - 0.3)
    bar_ax.set_xlabel("latent dimension (by final KL)")
    bar_ax.set_ylabel("KL (nats), last epoch")
    active = rows[-1].get("active_units")
    bar_ax.set_title(f"epoch {rows[-1]['epoch']}: {active} of {dims} units active" if active is not None
                     else f"epoch {rows[-1]['epoch']}")
    fig.tight_layout()
    return fig


def save_roc_curves(path: str | Path, panels: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> Path:
    """ROC curves, one panel per group: {panel title: {curve label: (false-positive rates, true-positive rates)}}."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * len(panels), 5), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, curves) in zip(axes, panels.items()):
        for label, (fpr, tpr) in curves.items():
            ax.plot(fpr.numpy(), tpr.numpy(), linewidth=1.2, label=label)
        ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle=":")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title(title)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return atomic_write_bytes(path, figure_png(fig))


def save_gif(path: str | Path, frames: torch.Tensor, milliseconds: int = 120, scale: int | None = 4) -> Path:
    """Write `gif_bytes` to `path` (scale None: `auto_scale` of one frame)."""
    if scale is None:
        scale = auto_scale(max(frames.shape[-2:]), max(frames.shape[-2:]))
    return atomic_write_bytes(path, gif_bytes(frames, milliseconds, scale))


def gif_bytes(frames: torch.Tensor, milliseconds: int = 120, scale: int = 4) -> bytes:
    """An animated GIF of frames (T, C, H, W) in [0, 1], played forwards then backwards, looping."""
    check_picture_pixels(frames.shape[-2] * scale, frames.shape[-1] * scale, len(frames))
    images = [Image.fromarray(image_grid(f[None], nrow=1, padding=0, scale=scale)) for f in frames]
    sequence = images + images[-2:0:-1]
    buffer = io.BytesIO()
    sequence[0].save(buffer, format="GIF", save_all=True, append_images=sequence[1:], duration=milliseconds, loop=0)
    return buffer.getvalue()


def save_latent_scatter(path: str | Path, points: np.ndarray, labels: np.ndarray | None, classes: Sequence[str],
                        title: str) -> Path:
    """Write `latent_scatter_png` to `path`."""
    return atomic_write_bytes(path, latent_scatter_png(points, labels, classes, title))


def latent_scatter_png(points: np.ndarray, labels: np.ndarray | None, classes: Sequence[str], title: str) -> bytes:
    """A 2-D scatter of embedded images, coloured by label where known."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6), dpi=100)
    ax = fig.subplots()
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.6, color="tab:blue")
    else:
        for value in np.unique(labels):
            chosen = labels == value
            name = classes[value] if value < len(classes) else str(value)
            ax.scatter(points[chosen, 0], points[chosen, 1], s=2, alpha=0.6, label=name,
                       color=_COLOURS[value % len(_COLOURS)])
        ax.legend(markerscale=5, fontsize=8, loc="best", title="label")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return figure_png(fig)


_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]


def factor_traversal_picture(images: torch.Tensor, factors: Sequence[str], dims: Sequence[int], steps: int,
                             base: str, scale: int | None = None) -> np.ndarray:
    """Per-factor traversals (len(factors) * steps, C, H, W), labelled: each row with its factor and the latent
    dimension of most mutual information with it (`dsprites_scores.factor_traversals`)."""
    return labelled_grid(images, nrow=steps, scale=scale, row_labels=[f"{f}: z{d}" for f, d in zip(factors, dims)],
                         title=f"One row per factor: the latent dimension with the most mutual information with it, "
                               f"swept left to right from the 1st to the 99th percentile of its posterior means; the "
                               f"others keep the posterior mean of {base}.")


def mutual_information_png(mi: np.ndarray, factors: Sequence[str], gaps: Sequence[float], title: str) -> bytes:
    """The (D, K) mutual information (nats) of each latent dimension with each factor, as a heatmap with its numbers;
    each factor's column labelled with its normalized MIG gap."""
    from matplotlib.figure import Figure

    d, k = mi.shape
    fig = Figure(figsize=(1.3 * k + 2.2, 0.42 * d + 1.9), dpi=100)
    ax = fig.subplots()
    shown = ax.imshow(mi, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(float(mi.max()), 1e-9))
    top = mi.max(axis=0)
    for j in range(d):
        for i in range(k):
            ax.text(i, j, f"{mi[j, i]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if mi[j, i] > 0.6 * top.max() else "white",
                    fontweight="bold" if mi[j, i] == top[i] and top[i] > 0 else "normal")
    ax.set_xticks(range(k), [f"{name}\ngap {gap:.2f}" for name, gap in zip(factors, gaps)], fontsize=8)
    ax.set_yticks(range(d), [f"z{j}" for j in range(d)], fontsize=8)
    ax.set_xlabel("factor (MIG gap: top minus second MI over its entropy)", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, label="mutual information (nats)")
    fig.tight_layout()
    return figure_png(fig)


def save_mutual_information(path: str | Path, mi: np.ndarray, factors: Sequence[str], gaps: Sequence[float],
                            title: str) -> Path:
    """Write `mutual_information_png` to `path`."""
    return atomic_write_bytes(path, mutual_information_png(mi, factors, gaps, title))
