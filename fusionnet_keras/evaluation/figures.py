"""Figures: the Agg figure helpers (new_figure, save_figure: atomic) and the nucleus morphology figures,
the paper's Fig. 9 (overlay by sphericity) and Fig. 10 (features)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.morphology import check_voxel_size, instance_labels
from fusionnet_keras.utils.atomic import atomic_path, check_overwrite


def save_figure(fig, path, overwrite: bool = True, dpi: int = 150) -> Path:
    """Write a matplotlib figure atomically; the format comes from the suffix (default png)."""
    path = check_overwrite(path, overwrite)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    except ValueError as exc:  # unknown format
        raise FusionNetError(f"cannot write figure {path}: {str(exc).splitlines()[0]}") from None
    return path


def new_figure(figsize):
    """A matplotlib figure on the Agg canvas (no pyplot state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _grey(section: np.ndarray) -> np.ndarray:
    s = section.astype(np.float32)
    lo, hi = np.percentile(s, [0.5, 99.5]) if s.size else (0.0, 1.0)
    return np.clip((s - lo) / max(hi - lo, 1e-6), 0, 1)


def plot_overlay(image, labels, records, path, *, voxel_size=None, z: int | None = None,
                 y: int | None = None, binary: bool | None = None, connectivity: int = 26,
                 cmap: str = "jet", overwrite: bool = True) -> Path:
    """Fig. 9: nuclei over the EM in a transverse (x-y, at ``z``) and a horizontal
    (x-z, at ``y``) section, through the volume centre by default.

    Each nucleus is filled semi-transparently and outlined in the colour of its
    sphericity (``cmap``, default ``jet``: blue = low -> red = high, scaled to the
    range of ``records``), with a colorbar. ``records`` come from
    :func:`measure_nuclei` on the same ``labels`` (binary labels are split the
    same way). With ``voxel_size`` (nm) the axes are in um and the x-z panel has
    the true aspect. Without nuclei the sections are drawn with a "no nuclei" note.
    """
    img = np.asarray(image)
    if img.ndim != 3:
        raise FusionNetError(f"image must be a 3-D (Z, Y, X) volume, got {img.ndim} dimensions")
    inst = instance_labels(labels, binary=binary, connectivity=connectivity)
    if inst.shape != img.shape:
        raise FusionNetError(f"image shape {img.shape} and labels shape {inst.shape} differ")
    Z, Y, X = img.shape
    z = Z // 2 if z is None else int(z)
    y = Y // 2 if y is None else int(y)
    if not (0 <= z < Z and 0 <= y < Y):
        raise FusionNetError(f"section z={z}, y={y} is outside the volume {img.shape}")
    return plot_sections((img[z], inst[z]), (img[:, y, :], inst[:, y, :]), records, path, z=z, y=y,
                         voxel_size=voxel_size, cmap=cmap, overwrite=overwrite)


def plot_sections(xy, xz, records, path, *, z: int, y: int, voxel_size=None, cmap: str = "jet",
                  overwrite: bool = True) -> Path:
    """Fig. 9 (see :func:`plot_overlay`) from its two sections only: ``xy = (image, labels)`` at ``z``
    and ``xz = (image, labels)`` at ``y``, e.g. read from a volume larger than memory."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from skimage.segmentation import find_boundaries

    (img_xy, lab_xy), (img_xz, lab_xz) = xy, xz
    (Y, X), Z = np.shape(img_xy), np.shape(img_xz)[0]
    vs_um = check_voxel_size(voxel_size) / 1000.0 if voxel_size is not None else None

    sph = {int(r["label"]): float(r["sphericity"]) for r in records}
    vals = np.array([v for v in sph.values() if np.isfinite(v)])
    vmin, vmax = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
    if vmax - vmin < 1e-3:
        vmin, vmax = vmin - 0.05, vmax + 0.05
    norm = Normalize(vmin=vmin, vmax=vmax)
    colormap = colormaps[cmap]

    def overlay(lab2d):
        rgba = np.zeros(lab2d.shape + (4,), dtype=np.float32)
        edges = find_boundaries(lab2d, mode="inner")
        for lab in np.unique(lab2d):
            if lab == 0 or int(lab) not in sph or not np.isfinite(sph[int(lab)]):
                continue
            colour = np.array(colormap(norm(sph[int(lab)])), dtype=np.float32)
            m = lab2d == lab
            rgba[m, :3] = colour[:3]
            rgba[m, 3] = 0.35
            rgba[m & edges, 3] = 1.0
        return rgba

    fig = new_figure((12, 6.5))
    grid = fig.add_gridspec(1, 2, width_ratios=[1, 1])
    panels = [
        ("transverse (x-y), z = %d" % z, img_xy, lab_xy, (X, Y), (2, 1), "y"),
        ("horizontal (x-z), y = %d" % y, img_xz, lab_xz, (X, Z), (2, 0), "z"),
    ]
    for i, (title, sec, lab2d, (w, h), (ax_x, ax_v), vname) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        if vs_um is not None:
            extent = (-0.5 * vs_um[ax_x], (w - 0.5) * vs_um[ax_x], (h - 0.5) * vs_um[ax_v], -0.5 * vs_um[ax_v])
            unit = " (um)"
        else:
            extent, unit = None, " (voxels)"
        ax.imshow(_grey(sec), cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
        ax.imshow(overlay(lab2d), extent=extent, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("x" + unit)
        ax.set_ylabel(vname + unit)
        if not records:
            ax.text(0.5, 0.5, "no nuclei", transform=ax.transAxes, ha="center", va="center",
                    fontsize=16, color="white", bbox=dict(facecolor="black", alpha=0.6))
    sm = ScalarMappable(norm=norm, cmap=colormap)
    sm.set_array(np.array([vmin, vmax]))
    fig.colorbar(sm, ax=fig.axes, fraction=0.025, pad=0.02, label="sphericity")
    return save_figure(fig, path, overwrite)


def plot_features(records, path, overwrite: bool = True) -> Path:
    """Fig. 10: volume, surface area and sphericity against the centroid's
    horizontal coordinate x (um), coloured by ``cluster`` (one colour when the
    records are not annotated); outliers are drawn as crosses. Nuclei cut by the
    volume border (``touches_border``: truncated sizes, left out of the K-means
    fit and the report's statistics) are hollow grey circles, without cluster or
    outlier marks. Without nuclei the axes carry a "no nuclei" note."""
    from matplotlib import colormaps

    fig = new_figure((13, 4))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    names = [("volume_um3", "volume (um$^3$)"), ("surface_area_um2", "surface area (um$^2$)"),
             ("sphericity", "sphericity")]
    xs = np.array([float(r["centroid_x_um"]) for r in records])
    clusters = np.array([int(r.get("cluster", 0)) for r in records], dtype=int)
    outl = np.array([bool(r.get("outlier", False)) for r in records], dtype=bool)
    cut = np.array([bool(r.get("touches_border", False)) for r in records], dtype=bool)
    colours = colormaps["tab10"]
    for ax, (key, label) in zip(axes, names):
        vals = np.array([float(r[key]) for r in records])
        if cut.any():
            ax.scatter(xs[cut], vals[cut], s=14, facecolors="none", edgecolors="grey",
                       label="cut by the border (not in the fit)")
        for c in np.unique(clusters[~cut]):
            sel = (clusters == c) & ~outl & ~cut
            name = f"cluster {c}" if c >= 0 else "unclustered"
            if sel.any():
                ax.scatter(xs[sel], vals[sel], s=18, color=colours(c % 10) if c >= 0 else "grey", label=name)
            sel = (clusters == c) & outl & ~cut
            if sel.any():
                ax.scatter(xs[sel], vals[sel], s=30, marker="x",
                           color=colours(c % 10) if c >= 0 else "grey", label=f"{name} (outlier)")
        ax.set_xlabel("centroid x (um)")
        ax.set_ylabel(label)
        if not records:
            ax.text(0.5, 0.5, "no nuclei", transform=ax.transAxes, ha="center", va="center", fontsize=14)
    if records and any("cluster" in r for r in records):
        axes[-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure(fig, path, overwrite)



def plot_split_vi(curves: dict, path, *, title: str | None = None, overwrite: bool = True) -> Path:
    """Split-VI plot (Nunez-Iglesias et al. 2013; the third paper's Figs. 1, 4, 5): VI merge
    (under-segmentation) on x, VI split (over-segmentation) on y, in bits; one curve per method,
    one point per agglomeration threshold (lower left is better).

    Args:
        curves: ``{label: [(threshold, vi_merge, vi_split), ...]}``; a threshold of
            ``None`` (e.g. the watershed fragments alone) is drawn as a single marker.
        path: the image to write (format from the suffix), atomically.

    Examples:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plot_split_vi({"mean": [(0.3, 0.2, 1.5), (0.5, 0.6, 0.8)]}, pathlib.Path(d) / "split_vi.png").name
        'split_vi.png'
    """
    from matplotlib import colormaps

    if not curves:
        raise FusionNetError("no curves to plot")
    fig = new_figure((6, 5))
    ax = fig.add_subplot(1, 1, 1)
    colours = colormaps["tab10"]
    for i, (label, points) in enumerate(curves.items()):
        pts = sorted(points, key=lambda p: -1.0 if p[0] is None else float(p[0]))
        if not pts:
            continue
        x = [float(p[1]) for p in pts]
        y = [float(p[2]) for p in pts]
        single = len(pts) == 1
        ax.plot(x, y, marker="s" if single else "o", markersize=7 if single else 4,
                linestyle="none" if single else "-", color=colours(i % 10), label=label)
        if not single:
            for p, xi, yi in ((pts[0], x[0], y[0]), (pts[-1], x[-1], y[-1])):
                ax.annotate(f"{p[0]:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=colours(i % 10))
    ax.set_xlabel("VI merge H(T|S) (bits, false merges)")
    ax.set_ylabel("VI split H(S|T) (bits, false splits)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path, overwrite)
