"""Synthetic EM-like volumes of neuronal nuclei with instance labels.

The paper's second task (Quan et al., section 4.2) segments neuronal nuclei in
serial-section EM of a larval zebrafish brain (voxels 56.4 x 56.4 x ~60 nm) and
then measures every nucleus. Those volumes are not public, so this module
generates look-alikes with exact ground truth.

Axis order is always ``(Z, Y, X)``; ``voxel_size`` is in nanometres, also in
``(Z, Y, X)`` order. What a volume contains:

* **Neuropil background** (mid grey): fine smoothed-noise texture, thin dark
  membrane-like sheets (the zero set of a smooth 3-D noise field, which shows as
  thin dark lines in every section), small dark dots (vesicles) and larger dark
  blobs (mitochondria).
* **Cell bodies**: a thin, lighter cytoplasm rim around each nucleus closed by a
  dark plasma membrane (tightly packed somata, as in the zebrafish cell-body layers).
* **Nuclei**: irregular ellipsoids, randomly rotated, with semi-axes drawn from
  ``diameter_um`` (neuronal nuclei in larval zebrafish are about 4-6 um across,
  i.e. ~70-110 voxels at 56.4 nm) times ``size_scale`` (use e.g. 0.3 for tiny
  test volumes). The surface is perturbed by a smooth, low-frequency radial
  function (a random polynomial of degree 2-3 in the direction, i.e. low-order
  spherical harmonics) of relative amplitude ``irregularity``. Each nucleus has a
  dark nuclear envelope (a shell 2-4 voxels thick, measured with an anisotropic
  distance transform inside the label, so touching nuclei each keep their own
  envelope), light nucleoplasm with dark chromatin clumps (denser near the
  envelope: peripheral heterochromatin) and, often, a dark nucleolus.
* **Packing**: centres are placed by random sequential addition; two nuclei may
  overlap by up to ``1 - packing`` of their summed radii, and each contested
  voxel goes to the nucleus whose (normalised) implicit surface function is
  smaller, so neighbours touch along a flat shared face while keeping distinct
  instance ids. Placement stops when the nuclei fill about ``density`` of the
  volume (or when ``n_nuclei`` are placed). Nuclei cut by the volume border are
  kept, as in a real crop.
* **Section jitter**: z-sections are shifted (each with probability
  ``jitter_prob``) by their own random integer xy offset in
  ``[-max_jitter, max_jitter]`` (imperfect section alignment). The shift
  is applied to the image and the labels together (both are cropped from a
  slightly larger canvas), so labels always sit exactly on their texture.
* **Imaging**: per-section brightness variation, in-plane Gaussian blur
  (``blur_sigma`` voxels) and noise: shot noise (Poisson, in its Gaussian
  approximation, variance proportional to intensity) plus Gaussian read noise,
  both scaled by ``noise``.

Everything is drawn from one :func:`numpy.random.default_rng` seeded with
``seed``: the same arguments give identical arrays. Work is vectorised and done
per nucleus on its bounding box (time and memory: docs/benchmarks.md, "Figures behind
the code's defaults").
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from fusionnet_keras.data.synthetic_imaging import SLAB as _SLAB
from fusionnet_keras.data.synthetic_imaging import imaging as _imaging
from fusionnet_keras.data.synthetic_imaging import jitter_sections as _jitter_sections
from fusionnet_keras.data.synthetic_imaging import smooth_noise as _smooth_noise
from fusionnet_keras.errors import FusionNetError
from fusionnet_keras.evaluation.morphology import check_voxel_size as _check_voxel_size
from fusionnet_keras.evaluation.postprocess import relabel

DEFAULT_VOXEL_SIZE = (60.0, 56.4, 56.4)
"""Voxel size (Z, Y, X) in nm of the paper's larval zebrafish volume."""

PRESETS = {
    # Paper protocol (section 4.2): two training volumes, 512^3 and 512x512x256
    # (X x Y x Z), and a separate 512^3 test volume -- given here as (Z, Y, X) --
    # at the paper's voxel size.
    "paper": {"train": [(512, 512, 512), (256, 512, 512)], "test": (512, 512, 512),
              "voxel_size": DEFAULT_VOXEL_SIZE},
    # Small CPU-friendly stand-in with the same structure, at twice the paper's voxel size (real-size
    # nuclei, 35-53 voxels across): the (160, 224, 224) test block (19 x 25 x 25 um) then holds 35-41
    # whole nuclei (not cut by its border; seeds 0-2), where the paper's voxels would give 2.
    "cpu": {"train": [(96, 256, 256), (64, 256, 256)], "test": (160, 224, 224),
            "voxel_size": (120.0, 112.8, 112.8)},
}

# Monomials u0^i u1^j u2^k of degree 2 and 3 (16 terms): a low-frequency basis
# of functions on the unit sphere for the radial surface perturbation.
_EXPONENTS = [
    (i, j, deg - i - j) for deg in (2, 3) for i in range(deg + 1) for j in range(deg + 1 - i)
]


def _fibonacci_sphere(n: int = 400) -> np.ndarray:
    """``n`` roughly uniform unit vectors (deterministic), shape (n, 3)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    r = np.sqrt(1.0 - z * z)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)


_DIRECTIONS = _fibonacci_sphere()


def _poly(coef: np.ndarray, u0, u1, u2):
    """Evaluate sum_t coef[t] * u0^i u1^j u2^k over :data:`_EXPONENTS`."""
    p0 = [1.0, u0, u0 * u0, u0 * u0 * u0]
    p1 = [1.0, u1, u1 * u1, u1 * u1 * u1]
    p2 = [1.0, u2, u2 * u2, u2 * u2 * u2]
    out = 0.0
    for c, (i, j, k) in zip(coef, _EXPONENTS):
        out = out + np.float32(c) * (p0[i] * p1[j] * p2[k])
    return out


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        shp = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise FusionNetError(f"shape must be 3 positive integers (Z, Y, X), got {shape!r}") from None
    if len(shp) != 3 or min(shp) < 1:
        raise FusionNetError(f"shape must be 3 positive integers (Z, Y, X), got {shape!r}")
    return shp


def _grid(sl, origin, vs):
    """Physical offsets (nm) of the voxels of canvas slice ``sl``, broadcastable."""
    return [
        ((np.arange(s.start, s.stop) - origin[a]) * vs[a]).astype(np.float32).reshape(
            [-1 if b == a else 1 for b in range(3)]
        )
        for a, s in enumerate(sl)
    ]


def _stamp_nucleus(lab, p, labels, best, dout, origin, vs, max_delta, vxy):
    """Claim for nucleus ``lab`` the canvas voxels inside its surface where its
    implicit function ``f`` (< 1 inside) beats the current owner's, and lower
    ``dout`` (approximate distance in nm outside the nearest nucleus) around it."""
    reach = float(p["axes"].max()) * (1.0 + max_delta) + 2.0 * float(vs.max()) + 6.0 * vxy
    lo = np.maximum(np.floor((p["centre"] - reach) / vs).astype(int) + origin, 0)
    hi = np.minimum(np.ceil((p["centre"] + reach) / vs).astype(int) + origin + 1, labels.shape)
    if np.any(hi <= lo):
        return
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    gz, gy, gx = _grid(sl, origin, vs)
    c = p["centre"].astype(np.float32)
    dz, dy, dx = gz - c[0], gy - c[1], gx - c[2]
    rot = p["rot"].astype(np.float32)
    q = [(rot[0, k] * dz + rot[1, k] * dy + rot[2, k] * dx) / np.float32(p["axes"][k]) for k in range(3)]
    rho = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
    np.maximum(rho, np.float32(1e-6), out=rho)
    delta = _poly(p["coef"], q[0] / rho, q[1] / rho, q[2] / rho)
    np.clip(delta, -max_delta, max_delta, out=delta)
    f = rho / (1.0 + delta)
    sub_best, sub_lab, sub_out = best[sl], labels[sl], dout[sl]
    take = (f < 1.0) & (f < sub_best)
    sub_best[take] = f[take]
    sub_lab[take] = lab
    dist = np.sqrt(dz * dz + dy * dy + dx * dx)
    outside = np.where(f >= 1.0, dist * (1.0 - 1.0 / np.maximum(f, 1.0)), np.inf).astype(np.float32)
    np.minimum(sub_out, outside, out=sub_out)


def _paint_nucleus(lab, sl, p, labels, img, n_fine, n_mid, origin, vs, vxy, edge):
    """Paint nucleus ``lab`` (bounding box ``sl``) into ``img``: nucleoplasm with
    chromatin clumps (denser near the envelope), nucleolus, dark envelope. Depth
    below the surface comes from an anisotropic distance transform of the label,
    so touching nuclei each get their own envelope."""
    shape = labels.shape
    esl = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, shape[a])) for a, s in enumerate(sl))
    mask = labels[esl] == lab
    # padding past a canvas border continues the nucleus (it is cut there, not
    # closed); depths beyond ``edge`` voxels only matter as "deep"
    widths = [(edge if s.start == 0 else 0, edge if s.stop == shape[a] else 0) for a, s in enumerate(esl)]
    depth = ndi.distance_transform_edt(np.pad(mask, widths, mode="edge"), sampling=vs)
    depth = depth[tuple(slice(b, b + m) for (b, _), m in zip(widths, mask.shape))].astype(np.float32)
    nf = n_fine[esl]
    chrom = np.float32(0.55) * nf + np.float32(0.85) * n_mid[esl]  # clumps of ~100-300 nm
    val = np.float32(192.0) + np.float32(9.0) * nf
    thr = np.float32(0.5) - np.float32(1.4) * np.exp(-depth / np.float32(150.0))
    val -= np.float32(p["chromatin"]) * _sigmoid((chrom - thr) / np.float32(0.2))
    if p["nucleolus"] is not None:
        off, r_nl = p["nucleolus"]
        gz, gy, gx = _grid(esl, origin, vs)
        cc = (p["centre"] + off).astype(np.float32)
        dn = np.sqrt((gz - cc[0]) ** 2 + (gy - cc[1]) ** 2 + (gx - cc[2]) ** 2)
        w_nl = _sigmoid((np.float32(r_nl) - dn) / np.float32(0.4 * vxy))
        val += w_nl * (np.float32(100.0) + np.float32(8.0) * nf - val)
    w_env = _sigmoid((np.float32(p["envelope"] + 0.5 * vxy) - depth) / np.float32(0.3 * vxy))
    val += w_env * (np.float32(62.0) + np.float32(8.0) * nf - val)
    img[esl][mask] = val[mask]


def _background_slab(nf, nm, do, vxy):
    """Neuropil with membranes, vesicles and mitochondria, and the somata's
    cytoplasm rim (``do``: distance outside the nearest nucleus, nm)."""
    cyto_nm = np.float32(4.5 * vxy)
    bg = np.float32(138.0) + np.float32(14.0) * nf
    bg -= np.float32(70.0) * np.exp(-((nm / np.float32(0.13)) ** 2))  # membranes
    bg -= np.float32(45.0) * _sigmoid((nf - np.float32(1.9)) / np.float32(0.2))  # vesicles
    bg -= np.float32(40.0) * _sigmoid((nm - np.float32(1.9)) / np.float32(0.12))  # mitochondria
    w_cyto = _sigmoid((cyto_nm - do) / np.float32(0.4 * vxy))
    bg += w_cyto * (np.float32(158.0) + np.float32(8.0) * nf - bg)
    bg -= np.float32(65.0) * np.exp(-(((do - cyto_nm) / np.float32(0.9 * vxy)) ** 2))  # plasma membrane
    return bg


def _check_arguments(shape, voxel_size, density, diameter_um, size_scale, n_nuclei, packing, irregularity,
                     max_jitter, jitter_prob, blur_sigma, noise):
    """Validated ``(shape, voxel size, (min, max) diameter)`` of :func:`make_nucleus_volume`."""
    shape = _check_shape(shape)
    vs = _check_voxel_size(voxel_size)
    if not 0.0 <= float(density) <= 0.6:
        raise FusionNetError(f"density must be between 0 and 0.6, got {density}")
    try:
        d_lo, d_hi = (float(d) for d in diameter_um)
    except (TypeError, ValueError):
        raise FusionNetError(f"diameter_um must be (min, max) in um, got {diameter_um!r}") from None
    if not 0 < d_lo <= d_hi:
        raise FusionNetError(f"diameter_um must be (min, max) with 0 < min <= max, got {diameter_um!r}")
    if not size_scale > 0:
        raise FusionNetError(f"size_scale must be positive, got {size_scale}")
    if n_nuclei is not None and int(n_nuclei) < 0:
        raise FusionNetError(f"n_nuclei must be >= 0, got {n_nuclei}")
    if not 0.5 <= float(packing) <= 1.5:
        raise FusionNetError(f"packing must be between 0.5 and 1.5, got {packing}")
    if not 0 <= float(irregularity) <= 0.2:
        raise FusionNetError(f"irregularity must be between 0 and 0.2, got {irregularity}")
    if int(max_jitter) < 0 or blur_sigma < 0 or noise < 0:
        raise FusionNetError("max_jitter, blur_sigma and noise must be >= 0")
    if not 0.0 <= float(jitter_prob) <= 1.0:
        raise FusionNetError(f"jitter_prob must be between 0 and 1, got {jitter_prob}")
    return shape, vs, (d_lo, d_hi)


def _place_nuclei(rng, shape, vs, density, radius_nm, n_nuclei, packing):
    """Random sequential addition of nucleus centres (nm) and radii until ``density`` is filled
    (volume cut by the border counted per axis) or ``n_nuclei`` are placed."""
    lo_nm = -0.5 * vs
    hi_nm = (np.array(shape) - 0.5) * vs
    target = float(density) * float(np.prod(hi_nm - lo_nm))
    r_lo, r_hi = radius_nm
    want = None if n_nuclei is None else int(n_nuclei)
    expected = want if want is not None else target / (4.0 / 3.0 * math.pi * ((r_lo + r_hi) / 2) ** 3)
    centres = np.zeros((0, 3))
    radii = np.zeros(0)
    filled = 0.0
    for _ in range(int(500 + 200 * expected)):
        if (want is not None and len(radii) >= want) or (want is None and filled >= target):
            break
        if want == 0 or (want is None and target <= 0):
            break
        r = rng.uniform(r_lo, r_hi)
        c = rng.uniform(lo_nm - 0.35 * r, hi_nm + 0.35 * r)
        if len(radii) and np.any(np.linalg.norm(centres - c, axis=1) < packing * (radii + r)):
            continue
        frac = np.clip((np.minimum(c + r, hi_nm) - np.maximum(c - r, lo_nm)) / (2 * r), 0, 1)
        filled += 4.0 / 3.0 * math.pi * r**3 * float(np.prod(frac))
        centres = np.vstack([centres, c])
        radii = np.append(radii, r)
    return centres, radii


def _nucleus_params(rng, centre, radius, irregularity, vxy) -> dict:
    """Shape (axes, rotation, surface perturbation) and texture (envelope, chromatin, nucleolus) of a nucleus."""
    ratios = np.exp(rng.normal(0.0, 0.12, 3))
    ratios /= np.prod(ratios) ** (1.0 / 3.0)
    coef = rng.standard_normal(len(_EXPONENTS))
    d = _DIRECTIONS
    spread = float(np.std(_poly(coef, d[:, 0], d[:, 1], d[:, 2])))
    coef *= float(irregularity) / max(spread, 1e-12)
    nucleolus = None
    if rng.random() < 0.6:
        v = rng.standard_normal(3)
        v /= np.linalg.norm(v)
        nucleolus = (v * rng.uniform(0.0, 0.35) * radius * ratios.min(), rng.uniform(0.12, 0.2) * radius)
    return dict(
        centre=centre,
        axes=radius * ratios,
        rot=_random_rotation(rng),
        coef=coef,
        envelope=rng.uniform(2.0, 4.0) * vxy,
        chromatin=rng.uniform(40.0, 70.0),
        nucleolus=nucleolus,
    )


def _label_canvas(params, canvas_shape, origin, vs, irregularity, vxy, min_voxels):
    """``(labels, dout, kept params)``: instance labels on the canvas (fragments under ``min_voxels``
    dropped, renumbered 1..m) and the approximate distance (nm) outside the nearest nucleus."""
    labels = np.zeros(canvas_shape, dtype=np.int32)
    best = np.full(canvas_shape, np.inf, dtype=np.float32)  # implicit function of the owner
    dout = np.full(canvas_shape, np.inf, dtype=np.float32)
    max_delta = 2.5 * float(irregularity)
    for i, p in enumerate(params):
        _stamp_nucleus(i + 1, p, labels, best, dout, origin, vs, max_delta, vxy)
    del best
    labels, keep = relabel(labels, min_size=max(int(min_voxels), 1))
    return labels, dout, [params[k - 1] for k in keep]


def _render(rng, labels, dout, params, origin, vs, vxy):
    """The noise-free float32 canvas: neuropil background and cell bodies, then the nuclei interiors."""
    canvas_shape = labels.shape
    n_fine = _smooth_noise(rng, canvas_shape, 70.0 / vs)  # ~70 nm texture grain
    n_mid = _smooth_noise(rng, canvas_shape, 300.0 / vs, factor=3)  # ~300 nm structures
    img = np.empty(canvas_shape, dtype=np.float32)
    for z0 in range(0, canvas_shape[0], _SLAB):  # slabs of sections keep the temporaries small
        sl = slice(z0, z0 + _SLAB)
        img[sl] = _background_slab(n_fine[sl], n_mid[sl], dout[sl], vxy)
    edge = int(math.ceil(6.0 * vxy / vs.min()))
    for lab, (sl, p) in enumerate(zip(ndi.find_objects(labels), params), start=1):
        if sl is not None:
            _paint_nucleus(lab, sl, p, labels, img, n_fine, n_mid, origin, vs, vxy, edge)
    return img


def make_nucleus_volume(
    shape=(128, 256, 256),
    voxel_size=DEFAULT_VOXEL_SIZE,
    seed: int = 0,
    n_nuclei: int | None = None,
    density: float = 0.4,
    diameter_um=(4.0, 6.0),
    size_scale: float = 1.0,
    irregularity: float = 0.05,
    packing: float = 0.9,
    max_jitter: int = 1,
    jitter_prob: float = 0.3,
    blur_sigma: float = 0.7,
    noise: float = 1.0,
    min_voxels: int = 64,
    return_info: bool = False,
):
    """Generate a synthetic EM-like nucleus volume and its instance labels.

    Args:
        shape: ``(Z, Y, X)`` voxels.
        voxel_size: ``(Z, Y, X)`` voxel size in nm (default: the paper's
            60 x 56.4 x 56.4 nm).
        seed: random seed; identical arguments give identical arrays.
        n_nuclei: place (at most) this many nuclei instead of filling to ``density``.
        density: target fraction of the volume occupied by nuclei (0 to 0.6;
            random packing rarely gets beyond ~0.45).
        diameter_um: ``(min, max)`` nucleus diameter in um (mean of the three axes),
            before ``size_scale``.
        size_scale: multiplies all nucleus sizes (e.g. 0.3 for small test volumes).
        irregularity: relative amplitude (std) of the low-frequency radial
            surface perturbation (0 = exact ellipsoids).
        packing: centres are at least ``packing * (r1 + r2)`` apart, so neighbours
            may overlap and then touch along a shared face (1 = no contact).
        max_jitter: largest per-section xy shift in voxels (0 = perfectly aligned).
        jitter_prob: probability that a section is shifted at all (its dy and dx
            are then uniform in ``[-max_jitter, max_jitter]``). Jitter roughens the
            labelled surfaces too, so it lowers measured sphericity (about 0.9 ->
            0.8 with the defaults, -> 0.55 when every section moves by up to 2).
        blur_sigma: in-plane Gaussian blur in voxels (0 = none).
        noise: scale of the shot + read noise (0 = noise-free).
        min_voxels: nuclei with fewer voxels in the generation canvas are dropped
            (tiny border caps).
        return_info: also return a dict with the per-section ``offsets`` (Z, 2)
            (dy, dx), and per label (row ``i`` is label ``i + 1``) ``centres_nm``,
            ``semi_axes_nm``, ``rotations`` and ``envelope_nm``.

    Returns:
        ``(image, labels)``: ``uint8`` (Z, Y, X) image and ``int32`` (Z, Y, X)
            instance labels (0 = background, nuclei numbered 1..N without gaps), plus
            the info dict when ``return_info``.
    """
    shape, vs, (d_lo, d_hi) = _check_arguments(shape, voxel_size, density, diameter_um, size_scale, n_nuclei,
                                               packing, irregularity, max_jitter, jitter_prob, blur_sigma, noise)
    rng = np.random.default_rng(seed)
    J = int(max_jitter)
    canvas_shape = (shape[0], shape[1] + 2 * J, shape[2] + 2 * J)  # room for the section jitter
    origin = np.array([0, J, J])  # canvas index of volume voxel (0, 0, 0)
    vxy = float(min(vs[1], vs[2]))

    radius_nm = (500.0 * d_lo * size_scale, 500.0 * d_hi * size_scale)
    centres, radii = _place_nuclei(rng, shape, vs, density, radius_nm, n_nuclei, packing)
    params = [_nucleus_params(rng, c, r, irregularity, vxy) for c, r in zip(centres, radii)]
    labels, dout, params = _label_canvas(params, canvas_shape, origin, vs, irregularity, vxy, min_voxels)
    img = _render(rng, labels, dout, params, origin, vs, vxy)
    del dout
    out_img, out_lab, offsets = _jitter_sections(rng, img, labels, shape, max_jitter, jitter_prob)
    del img, labels
    image = _imaging(rng, out_img, blur_sigma, noise)
    del out_img

    out_lab, present = relabel(out_lab)  # renumber the labels that survived the crop
    if not return_info:
        return image, out_lab
    kept = [params[k - 1] for k in present]
    info = {
        "offsets": np.asarray(offsets, dtype=np.int64),
        "centres_nm": np.array([p["centre"] for p in kept]).reshape(-1, 3),
        "semi_axes_nm": np.array([p["axes"] for p in kept]).reshape(-1, 3),
        "rotations": np.array([p["rot"] for p in kept]).reshape(-1, 3, 3),
        "envelope_nm": np.array([p["envelope"] for p in kept]),
        "voxel_size": tuple(float(v) for v in vs),
    }
    return image, out_lab, info


def make_dataset_volumes(preset: str = "cpu", seed: int = 0, voxel_size=None, **kwargs):
    """The paper's data protocol (section 4.2) as synthetic volumes.

    Two training volumes and a separate labelled test volume, all ``(Z, Y, X)``:

    * ``"paper"``: training (512, 512, 512) and (256, 512, 512) -- the paper's
      512^3 and 512 x 512 x 256 (X x Y x Z) volumes -- and a (512, 512, 512) test
      volume, at the paper's voxel size. Each 512^3 volume takes about a minute
      and a few GB of memory.
    * ``"cpu"``: training (96, 256, 256) and (64, 256, 256), test (160, 224, 224),
      at twice the paper's voxel size (120 x 112.8 x 112.8 nm; the same nucleus
      sizes in um), so the test block holds more than 30 whole nuclei; a few
      seconds each.

    ``voxel_size`` (nm, Z, Y, X) replaces the preset's.

    Each volume gets its own seed derived from ``seed``; ``kwargs`` go to
    :func:`make_nucleus_volume`.

    Returns:
        dict with ``"train"``: list of two ``(image, labels)`` pairs, ``"test"``: an
            ``(image, labels)`` pair, ``"voxel_size"`` (nm, Z, Y, X) and ``"preset"``.
    """
    if preset not in PRESETS:
        raise FusionNetError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    spec = PRESETS[preset]
    voxel_size = spec.get("voxel_size", DEFAULT_VOXEL_SIZE) if voxel_size is None else voxel_size
    shapes = list(spec["train"]) + [spec["test"]]
    seeds = np.random.SeedSequence(seed).generate_state(len(shapes))
    vols = [
        make_nucleus_volume(shape=s, voxel_size=voxel_size, seed=int(sd), **kwargs)
        for s, sd in zip(shapes, seeds)
    ]
    return {
        "train": vols[:-1],
        "test": vols[-1],
        "voxel_size": tuple(float(v) for v in _check_voxel_size(voxel_size)),
        "preset": preset,
    }
