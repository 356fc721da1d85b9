"""Astrocyte morphology of the held-out family.

A cell is built in a square local patch centred on its soma:

- the soma is a smoothed random star-shaped polygon whose pixel area equals the
  requested area;
- the processes are grown by space colonisation: attractor points scattered in
  one angular sector per primary process pull the tips of the tree toward
  them; branch thickness follows the pipe model (cross-section proportional to
  the number of tips served) and tapers with the distance from the soma;
- the fine-process ("spongy") territory is thresholded band-pass noise under a
  smooth envelope;
- the annotation follows the real consensus convention: the main visible
  branches (the thickest part of the tree, a connected subtree) drawn at the
  annotator width, and the same skeleton at 2 px for ``processes_thin``.

All coordinates are ``(y, x)`` in pixels. Nothing here knows about frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astro3s.metrics import process_width

__all__ = [
    "AstrocyteShape",
    "Tree",
    "annotator_width",
    "build_astrocyte",
    "main_paths",
    "drawing_width",
    "membrane_labelled",
    "densify_tree",
    "grow_tree",
    "star_polygon",
]

#: Annotator process width (px) at the D1 soma area (px) and its growth with soma area: a power law
#: through the per-cell medians of ASTRA's consensus RoiSets, each cell's process polygons taken
#: together as the scores see them (area / skeleton length of the union): D1 3.7 px (somata ~190 px),
#: D4 4.1 px (~100 px), D2 9.0 px (~2900 px); one point per dataset, least squares in log-log.
#: (Measured polygon by polygon the medians are 5.3 / 5.6 / 10.1 px: short polygons' skeletons lose
#: their ends, so that figure is ~1.4x the width of a cell's drawn processes.)
#: ``python experiments/measure_annotations.py`` prints these figures.
_D1_WIDTH = 4.46
_D1_SOMA_AREA = 223.0
_WIDTH_EXPONENT = 0.264


def annotator_width(soma_area: float) -> float:
    """Width (px) at which annotators draw a cell's processes.

    ``4.46 * (soma_area / 223) ** 0.264`` clipped to ``[3, 12]``: 4.3 px for a
    D1 soma (~190 px; annotated 3.7), 3.6 px for a D4 soma (~100 px; 4.1),
    8.9 px for a D2 soma (~2900 px; 9.0), as measured on a cell's processes
    taken together (area / skeleton length).

    Parameters
    ----------
    soma_area : float
        Soma area in pixels.

    Returns
    -------
    width : float
    """
    return float(np.clip(_D1_WIDTH * (max(soma_area, 1.0) / _D1_SOMA_AREA) ** _WIDTH_EXPONENT, 3.0, 12.0))


# --------------------------------------------------------------------------- soma


def star_polygon(rng: np.random.Generator, area: float, *, n_vertices: int = 72,
                 roughness: float = 0.14, max_elongation: float = 1.35) -> tuple[np.ndarray, np.ndarray]:
    """A random star-shaped polygon of a given area, in polar form.

    Parameters
    ----------
    rng : numpy.random.Generator
    area : float
        Polygon area in px^2.
    n_vertices : int
        Number of vertices, evenly spaced in angle.
    roughness : float
        Largest relative amplitude of the angular harmonics 2..5.
    max_elongation : float
        Largest axis ratio of the underlying ellipse (area preserving).

    Returns
    -------
    theta : ndarray of float64, shape (n_vertices,)
        Vertex angles in radians.
    radius : ndarray of float64, shape (n_vertices,)
        Vertex distances from the centre (px), scaled to the requested area.
    """
    theta = np.linspace(0.0, 2.0 * np.pi, n_vertices, endpoint=False)
    k = np.arange(2, 6)
    amp = rng.uniform(0.0, roughness, size=k.size) / np.sqrt(k - 1.0)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=k.size)
    radius = 1.0 + (amp[:, None] * np.cos(k[:, None] * theta + phase[:, None])).sum(axis=0)
    elong = rng.uniform(1.0, max_elongation)
    tilt = rng.uniform(0.0, np.pi)
    a, b = np.sqrt(elong), 1.0 / np.sqrt(elong)
    radius = radius / np.sqrt((np.cos(theta - tilt) / a) ** 2 + (np.sin(theta - tilt) / b) ** 2)
    radius = np.maximum(radius, 0.5)
    poly_area = 0.5 * np.sum(radius * np.roll(radius, -1)) * np.sin(2.0 * np.pi / n_vertices)
    return theta, radius * np.sqrt(area / poly_area)


def _top_pixels(field: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` largest values of ``field`` (float, (h, w))."""
    flat = field.ravel()
    count = int(np.clip(count, 1, flat.size))
    kth = np.partition(flat, flat.size - count)[flat.size - count]
    return (field >= kth) & (field > 0)


def soma_masks(theta: np.ndarray, radius: np.ndarray, centre: tuple[float, float],
               shape: tuple[int, int], *, area: float) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise a star polygon into a label mask of exact area and a soft footprint.

    Parameters
    ----------
    theta, radius : ndarray of float64, shape (V,)
        Polygon in polar form (see :func:`star_polygon`).
    centre : (float, float)
        Polygon centre in patch coordinates.
    shape : (int, int)
        Patch shape ``(h, w)``.
    area : float
        Requested mask area (px).

    Returns
    -------
    mask : ndarray of bool, shape (h, w)
        Smooth soma mask of ``round(area)`` pixels.
    soft : ndarray of float32, shape (h, w)
        Anti-aliased soma footprint in ``[0, 1]``.
    """
    from scipy import ndimage as ndi
    from skimage.draw import polygon

    rows = centre[0] + radius * np.sin(theta)
    cols = centre[1] + radius * np.cos(theta)
    poly = np.zeros(shape, dtype=np.float32)
    rr, cc = polygon(rows, cols, shape=shape)
    poly[rr, cc] = 1.0
    smooth = ndi.gaussian_filter(poly, max(0.8, 0.08 * float(np.sqrt(area / np.pi))))
    mask = _top_pixels(smooth, round(area))
    soft = ndi.gaussian_filter(mask.astype(np.float32), 0.6)
    return mask, soft


# --------------------------------------------------------------------------- process tree


@dataclass(frozen=True)
class Tree:
    """A process tree grown by space colonisation (coordinates relative to the soma centre).

    Attributes
    ----------
    pos : ndarray of float64, shape (N, 2)
        Node positions ``(y, x)`` in px.
    parent : ndarray of int64, shape (N,)
        Parent node, ``-1`` for the root of a primary process.
    primary : ndarray of int64, shape (N,)
        Index of the primary process the node belongs to.
    dist : ndarray of float64, shape (N,)
        Path length from the root (px).
    tips : ndarray of int64, shape (N,)
        Number of tips in the node's subtree (1 for a tip).
    radius : ndarray of float64, shape (N,)
        Process half-thickness at the node (px), non-increasing from root to tips.
    """

    pos: np.ndarray
    parent: np.ndarray
    primary: np.ndarray
    dist: np.ndarray
    tips: np.ndarray
    radius: np.ndarray

    @property
    def n_nodes(self) -> int:
        return int(self.pos.shape[0])


def _sector_attractors(rng: np.random.Generator, angles: np.ndarray, reach: np.ndarray, *,
                       inner: float, halfwidth: float, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Attractor points, uniform in area, in one angular sector per primary process.

    Returns ``(points (M, 2) float64, primary (M,) int64)``.
    """
    prim = np.repeat(np.arange(angles.size), count)
    outer = reach[prim]
    r = np.sqrt(rng.uniform(inner ** 2, outer ** 2))
    spread = (rng.uniform(-1.0, 1.0, prim.size) + rng.uniform(-1.0, 1.0, prim.size)) * 0.5
    th = angles[prim] + spread * halfwidth
    return np.stack([r * np.sin(th), r * np.cos(th)], axis=1), prim


def grow_tree(rng: np.random.Generator, roots: np.ndarray, angles: np.ndarray, reach: np.ndarray, *,
              soma_radius: float, step: float, n_attractors: np.ndarray, root_radius: np.ndarray,
              jitter: float = 0.2, max_iter: int = 400) -> Tree:
    """Grow one tree per primary process toward attractors in its sector.

    Parameters
    ----------
    rng : numpy.random.Generator
    roots : ndarray of float64, shape (P, 2)
        Root positions (on the soma border), relative to the soma centre.
    angles : ndarray of float64, shape (P,)
        Direction of each primary process (radians).
    reach : ndarray of float64, shape (P,)
        Largest distance from the soma centre of each primary's attractors (px).
    soma_radius : float
        Equivalent soma radius ``sqrt(area / pi)`` (px).
    step : float
        Growth step (px).
    n_attractors : ndarray of int, shape (P,)
        Attractors per primary (more = bushier).
    root_radius : ndarray of float64, shape (P,)
        Half-thickness of each primary at its root (px).
    jitter : float
        Random deviation of each step direction (tortuosity).
    max_iter : int
        Growth iterations at most.

    Returns
    -------
    tree : Tree
    """
    n_prim = angles.size
    att, att_prim = _sector_attractors(rng, angles, reach, inner=1.3 * soma_radius,
                                       halfwidth=min(0.9 * np.pi / n_prim, 0.9),
                                       count=np.asarray(n_attractors))
    pos = [np.asarray(roots, dtype=np.float64)]
    parent = [np.full(n_prim, -1, dtype=np.int64)]
    prim = [np.arange(n_prim, dtype=np.int64)]
    all_pos, all_prim = pos[0], prim[0]
    influence = 1.2 * float(reach.max())
    kill = 2.0 * step
    for _ in range(max_iter):
        if att.shape[0] == 0:
            break
        d = np.hypot(att[:, None, 0] - all_pos[None, :, 0], att[:, None, 1] - all_pos[None, :, 1])
        d[att_prim[:, None] != all_prim[None, :]] = np.inf
        near = np.argmin(d, axis=1)
        dmin = d[np.arange(att.shape[0]), near]
        pulled = dmin < influence
        if not pulled.any():
            break
        pull = (att[pulled] - all_pos[near[pulled]]) / dmin[pulled, None]
        acc = np.zeros_like(all_pos)
        np.add.at(acc, near[pulled], pull)
        grow = np.unique(near[pulled])
        direction = acc[grow] / np.maximum(np.hypot(acc[grow, 0], acc[grow, 1]), 1e-9)[:, None]
        direction = direction + rng.normal(0.0, jitter, direction.shape)
        direction /= np.maximum(np.hypot(direction[:, 0], direction[:, 1]), 1e-9)[:, None]
        new = all_pos[grow] + step * direction
        # a node pulled equally from all sides would sprout the same child again: drop duplicates
        dnew = np.hypot(new[:, None, 0] - all_pos[None, :, 0], new[:, None, 1] - all_pos[None, :, 1])
        dnew[np.arange(grow.size), grow] = np.inf
        fresh = dnew.min(axis=1) > 0.45 * step
        if not fresh.any():
            break
        pos.append(new[fresh])
        parent.append(grow[fresh])
        prim.append(all_prim[grow[fresh]])
        all_pos = np.concatenate(pos)
        all_prim = np.concatenate(prim)
        dk = np.hypot(att[:, None, 0] - new[None, fresh, 0], att[:, None, 1] - new[None, fresh, 1])
        dk[att_prim[:, None] != all_prim[None, -int(fresh.sum()):]] = np.inf
        alive = dk.min(axis=1) > kill
        att, att_prim = att[alive], att_prim[alive]
    parent_all = np.concatenate(parent)
    return _finish_tree(all_pos, parent_all, all_prim, step=step, root_radius=np.asarray(root_radius))


def _finish_tree(pos: np.ndarray, parent: np.ndarray, prim: np.ndarray, *, step: float,
                 root_radius: np.ndarray) -> Tree:
    """Path lengths, tip counts and pipe-model radii of a grown tree.

    Nodes are stored in growth order, so a parent always precedes its children
    and one reversed pass accumulates the subtree tip counts.
    """
    n = pos.shape[0]
    dist = np.zeros(n)
    has_parent = parent >= 0
    for i in np.flatnonzero(has_parent):  # loop over tree nodes (a few hundred per cell)
        dist[i] = dist[parent[i]] + step
    tips = np.ones(n, dtype=np.int64)
    n_children = np.bincount(parent[has_parent], minlength=n)
    tips[n_children > 0] = 0
    for i in np.flatnonzero(has_parent)[::-1]:
        tips[parent[i]] += tips[i]
    root_tips = tips[:root_radius.size][prim]
    far = np.zeros(root_radius.size)
    np.maximum.at(far, prim, dist)
    far = np.maximum(far, step)[prim]
    radius = root_radius[prim] * np.sqrt(tips / root_tips) * (1.0 - 0.55 * dist / far)
    radius = np.maximum(radius, 0.35)
    return Tree(pos=pos, parent=parent, primary=prim, dist=dist, tips=tips, radius=radius)


def densify_tree(tree: Tree, keep: np.ndarray | None = None, *,
                 spacing: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Points along every parent-child segment of a tree.

    Parameters
    ----------
    tree : Tree
    keep : ndarray of bool, shape (N,), optional
        Nodes to draw; a segment is drawn when its child node is kept.
    spacing : float
        Distance between consecutive points (px).

    Returns
    -------
    points : ndarray of float64, shape (P, 2)
        ``(y, x)`` relative to the soma centre.
    node : ndarray of int64, shape (P,)
        Child node of the segment each point lies on.
    """
    child = np.flatnonzero(tree.parent >= 0)
    if keep is not None:
        child = child[keep[child]]
    if child.size == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    a = tree.pos[tree.parent[child]]
    b = tree.pos[child]
    n_sub = int(np.ceil(np.hypot(*(b - a).T).max() / spacing)) + 1
    frac = np.linspace(0.0, 1.0, n_sub + 1)
    points = a[:, None, :] + frac[None, :, None] * (b - a)[:, None, :]
    node = np.repeat(child, n_sub + 1)
    return points.reshape(-1, 2), node


def _raster(points: np.ndarray, node: np.ndarray, centre: tuple[float, float],
            shape: tuple[int, int]) -> np.ndarray:
    """Node index of the skeleton pixels (``-1`` elsewhere), int64 (h, w)."""
    out = np.full(shape, -1, dtype=np.int64)
    if points.shape[0] == 0:
        return out
    ij = np.rint(points + np.asarray(centre)).astype(np.int64)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < shape[1])
    out[ij[inside, 0], ij[inside, 1]] = node[inside]
    return out


def _dilate_to_width(skeleton: np.ndarray, width: float) -> np.ndarray:
    """Pixels within ``width / 2`` of a skeleton (bool (h, w) -> bool (h, w))."""
    from scipy import ndimage as ndi

    if not skeleton.any():
        return np.zeros_like(skeleton)
    return ndi.distance_transform_edt(~skeleton) <= width / 2.0


def drawing_width(skeleton: np.ndarray, soma: np.ndarray, width: float) -> float:
    """Dilation width whose mask measures ``width`` by :func:`astro3s.metrics.process_width`.

    Dilating a skeleton to a nominal width ``w`` measures wider than ``w``
    (rounded tips, junctions, diagonal runs counted in pixels), so the drawing
    width is picked among the dilation radii a pixel grid can realise
    (``sqrt(i^2 + j^2)``) to make the measured width closest to ``width``.

    Parameters
    ----------
    skeleton : ndarray of bool, shape (h, w)
        Main-branch skeleton.
    soma : ndarray of bool, shape (h, w)
        Soma mask, excluded from the measured mask.
    width : float
        Wanted measured width (px).

    Returns
    -------
    draw : float
        Width to pass to the dilation (``2 * radius``, at least ``2 * sqrt(2)``).
    """
    from scipy import ndimage as ndi

    if not skeleton.any():
        return width
    dist = ndi.distance_transform_edt(~skeleton)
    i, j = np.mgrid[: int(np.ceil(width)) + 1, : int(np.ceil(width)) + 1]
    radii = np.unique(np.hypot(i, j))
    # radius >= sqrt(2): the 2-px thin lines stay inside the annotation
    radii = radii[(radii >= np.sqrt(2.0) - 1e-9) & (radii <= 0.6 * width + 0.5)]
    if radii.size == 0:
        return width
    errors = [abs(process_width((dist <= r + 1e-6) & ~soma) - width) for r in radii]  # a few radii
    return float(2.0 * radii[int(np.argmin(errors))] + 2e-6)


def _thin_lines(skeleton: np.ndarray) -> np.ndarray:
    """A skeleton dilated to a 2-px-wide line (bool (h, w) -> bool (h, w))."""
    from scipy import ndimage as ndi

    return ndi.binary_dilation(skeleton, structure=np.ones((2, 2), dtype=bool))


def main_paths(tree: Tree) -> np.ndarray:
    """Nodes on each primary process's main path, from its root to a tip.

    At every fork the path follows the child whose subtree has the most tips
    (the thickest, by the pipe model), ties to the child grown first: the
    process an annotator traces out to its end.

    Parameters
    ----------
    tree : Tree

    Returns
    -------
    keep : ndarray of bool, shape (N,)
    """
    n = tree.n_nodes
    has_parent = tree.parent >= 0
    child = np.flatnonzero(has_parent)
    main_child = np.full(n, -1, dtype=np.int64)
    if child.size:
        order = np.lexsort((child, -tree.tips[child], tree.parent[child]))
        ranked, parents = child[order], tree.parent[child[order]]
        first = np.ones(ranked.size, dtype=bool)
        first[1:] = parents[1:] != parents[:-1]
        main_child[parents[first]] = ranked[first]
    keep = ~has_parent
    for i in child:  # loop over tree nodes in growth order (parents first; a few hundred per cell)
        keep[i] = keep[tree.parent[i]] and main_child[tree.parent[i]] == i
    return keep


def select_main_branches(tree: Tree, centre: tuple[float, float], shape: tuple[int, int],
                         soma: np.ndarray, *, width: float, target_area: float,
                         n_steps: int = 14) -> np.ndarray:
    """Nodes of the main visible branches whose annotation covers ``target_area``.

    Two bisections: first on a thickness threshold (``radius >= threshold``;
    radii never grow from root to tip, so the kept set is a connected subtree
    of thick branches), keeping the thinnest threshold that still covers the
    target; then on a path-length cut-off inside that subtree, which trims its
    tips smoothly. The area is the skeleton dilated to ``width`` minus the
    soma; when even the whole tree is too small, every node is kept.

    Parameters
    ----------
    tree : Tree
    centre : (float, float)
        Soma centre in patch coordinates.
    shape : (int, int)
        Patch shape.
    soma : ndarray of bool, shape (h, w)
        Soma mask, excluded from the area.
    width : float
        Annotator width (px).
    target_area : float
        Wanted process area (px).
    n_steps : int
        Steps of each bisection.

    Returns
    -------
    keep : ndarray of bool, shape (N,)
    """
    points, node = densify_tree(tree)
    ij = np.rint(points + np.asarray(centre)).astype(np.int64)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < shape[1])
    ij, node = ij[inside], node[inside]
    # a pixel drawn by several segments is kept when its thickest, most proximal one is
    pix_radius = np.full(shape, -1.0)
    np.maximum.at(pix_radius, (ij[:, 0], ij[:, 1]), tree.radius[node])
    pix_dist = np.full(shape, np.inf)
    np.minimum.at(pix_dist, (ij[:, 0], ij[:, 1]), tree.dist[node])

    def area(threshold: float, cutoff: float = np.inf) -> int:
        skeleton = (pix_radius >= threshold) & (pix_dist <= cutoff)
        return int(np.count_nonzero(_dilate_to_width(skeleton, width) & ~soma))

    lo, hi = float(tree.radius.min()), float(tree.radius.max()) + 1e-6
    if area(lo) <= target_area:
        return np.ones(tree.n_nodes, dtype=bool)
    for _ in range(n_steps):  # invariant: area(lo) > target >= area(hi)
        mid = 0.5 * (lo + hi)
        if area(mid) > target_area:
            lo = mid
        else:
            hi = mid
    near, far = 0.0, float(tree.dist.max()) + 1e-6
    for _ in range(n_steps):  # invariant: area(lo, far) > target >= area(lo, near)
        mid = 0.5 * (near + far)
        if area(lo, mid) > target_area:
            far = mid
        else:
            near = mid
    cutoff = far if abs(area(lo, far) - target_area) < abs(area(lo, near) - target_area) else near
    return (tree.radius >= lo) & (tree.dist <= cutoff)


# --------------------------------------------------------------------------- rendering of one cell


def _tube_field(tree: Tree, centre: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Tapered tubes along every branch, float32 (h, w), peak ~1 at the thickest root.

    Radii are grouped in geometric classes; each class is drawn with one
    distance transform, and the classes are combined by maximum so that a thin
    branch never cuts into a thick one.
    """
    from scipy import ndimage as ndi

    points, node = densify_tree(tree)
    raster = _raster(points, node, centre, shape)
    on = raster >= 0
    r_pix = np.where(on, tree.radius[np.maximum(raster, 0)], 0.0)
    r_max = float(tree.radius.max())
    edges = r_max * 0.7 ** np.arange(12)
    edges = edges[edges > 0.3]
    field = np.zeros(shape, dtype=np.float32)
    for k in range(edges.size):  # loop over a handful of thickness classes
        upper = edges[k] + 1e-9
        lower = edges[k + 1] if k + 1 < edges.size else 0.0
        sel = on & (r_pix <= upper) & (r_pix > lower)
        if not sel.any():
            continue
        r = 0.5 * (upper + lower) if lower > 0 else upper
        d = ndi.distance_transform_edt(~sel)
        sigma = max(0.8 * r, 0.5)
        level = float(np.clip((r / r_max) ** 0.6, 0.3, 1.0))
        field = np.maximum(field, (level * np.exp(-0.5 * (d / sigma) ** 2)).astype(np.float32))
    return field


def _sponge_field(rng: np.random.Generator, centre: tuple[float, float], shape: tuple[int, int], *,
                  territory: float, fraction: float) -> np.ndarray:
    """Spongy fine-process territory: thresholded band-pass noise under an envelope.

    Returns float32 (h, w) in ``[0, 1]``.
    """
    from scipy import ndimage as ndi

    noise = rng.standard_normal(shape).astype(np.float32)
    band = ndi.gaussian_filter(noise, 0.7) - ndi.gaussian_filter(noise, 2.2)
    sponge = (band > np.quantile(band, 1.0 - fraction)).astype(np.float32)
    sponge = ndi.gaussian_filter(sponge, 0.5)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    phase = rng.uniform(0.0, 2.0 * np.pi, 2)
    ang = np.arctan2(dy, dx)
    radius = territory * (1.0 + 0.15 * np.cos(2.0 * ang + phase[0]) + 0.08 * np.cos(3.0 * ang + phase[1]))
    envelope = np.exp(-((np.hypot(dy, dx) / radius) ** 3))
    return (sponge * envelope).astype(np.float32)


@dataclass(frozen=True)
class AstrocyteShape:
    """One astrocyte drawn in its local patch.

    The patch is square, ``(2 * half + 1)`` pixels wide, and the soma centre
    sits at ``centre`` (``half`` plus the sub-pixel offset).

    Attributes
    ----------
    centre : (float, float)
        Soma centre in patch coordinates.
    soma_area : float
        Requested soma area (px).
    soma : ndarray of bool, shape (h, w)
        Soma label mask.
    soma_soft : ndarray of float32, shape (h, w)
        Soma footprint in ``[0, 1]`` (with a dimmer nucleus).
    processes : ndarray of float32, shape (h, w)
        Tubes plus spongy territory outside the soma, in ``[0, 1]``.
    band : ndarray of int64, shape (h, w)
        Distance band (0..n_bands-1) of the nearest branch for pixels close to
        the tree, ``-1`` for far spongy territory and background.
    band_dist : ndarray of float64, shape (n_bands,)
        Mean path length from the soma of each band (px).
    micro_centres : ndarray of float64, shape (M, 2)
        Microdomain centres in patch coordinates.
    annotated : ndarray of bool, shape (h, w)
        Main-branch skeleton dilated to the annotator width, minus the soma.
    thin : ndarray of bool, shape (h, w)
        Same skeleton dilated to 2 px, minus the soma.
    info : dict
        Scalars describing the cell (primaries, reach, width, area ratio).
    """

    centre: tuple[float, float]
    soma_area: float
    soma: np.ndarray
    soma_soft: np.ndarray
    processes: np.ndarray
    band: np.ndarray
    band_dist: np.ndarray
    micro_centres: np.ndarray
    annotated: np.ndarray
    thin: np.ndarray
    info: dict

    @property
    def shape(self) -> tuple[int, int]:
        return self.soma.shape


def build_astrocyte(rng: np.random.Generator, soma_area: float, *, offset: tuple[float, float] = (0.0, 0.0),
                    pad: int = 0, n_bands: int = 4, process_ratio: float | None = None,
                    reach_radii: tuple[float, float] = (2.0, 4.0), annotation: str = "area") -> AstrocyteShape:
    """Draw one astrocyte: soma, process tree, spongy territory, annotations.

    Parameters
    ----------
    rng : numpy.random.Generator
    soma_area : float
        Soma area (px).
    offset : (float, float)
        Sub-pixel offset of the soma centre from the patch centre.
    pad : int
        Extra border (px) around the cell, e.g. for the PSF tails.
    n_bands : int
        Number of distance bands the processes are split into (for delays).
    process_ratio : float, optional
        Wanted annotated process area / soma area (default: uniform 1.4-1.9).
    reach_radii : (float, float)
        Range of each primary process's reach from the soma centre, in soma radii.
    annotation : {"area", "trunks"}
        ``"area"``: the thickest branches until the annotated area is
        ``process_ratio`` soma areas (:func:`select_main_branches`);
        ``"trunks"``: every primary process's main path traced to its tip
        (:func:`main_paths`), as far out as the cell goes.

    Returns
    -------
    cell : AstrocyteShape
    """
    if annotation not in ("area", "trunks"):
        raise ValueError(f"annotation must be 'area' or 'trunks', got {annotation!r}")
    from scipy import ndimage as ndi

    r0 = float(np.sqrt(soma_area / np.pi))
    n_prim = int(rng.integers(3, 7))
    angles = np.sort(rng.uniform(0, 2 * np.pi) + np.arange(n_prim) * 2 * np.pi / n_prim
                     + rng.uniform(-0.35, 0.35, n_prim) * 2 * np.pi / n_prim)
    reach = rng.uniform(float(reach_radii[0]), float(reach_radii[1]), n_prim) * r0
    territory = float(reach.mean() * rng.uniform(0.95, 1.15))
    half = int(np.ceil(max(reach.max() * 1.08, territory * 1.35))) + 3 + int(pad)
    shape = (2 * half + 1, 2 * half + 1)
    centre = (half + float(offset[0]), half + float(offset[1]))

    theta, radius = star_polygon(rng, soma_area)
    soma, soma_soft = soma_masks(theta, radius, centre, shape, area=soma_area)
    # roots on the soma border, in the direction of each primary
    r_at = np.interp(np.mod(angles, 2 * np.pi), theta, radius, period=2 * np.pi) * 0.85
    roots = np.stack([r_at * np.sin(angles), r_at * np.cos(angles)], axis=1)
    step = max(0.9, 0.11 * r0)
    root_radius = np.maximum(rng.uniform(0.2, 0.3, n_prim) * r0, 0.8)
    n_att = rng.integers(14, 34, n_prim)
    tree = grow_tree(rng, roots, angles, reach, soma_radius=r0, step=step, n_attractors=n_att,
                     root_radius=root_radius)

    # rendered structure: tubes + sponge, outside the soma
    tubes = _tube_field(tree, centre, shape)
    sponge = _sponge_field(rng, centre, shape, territory=territory, fraction=rng.uniform(0.3, 0.45))
    sponge_level = rng.uniform(0.15, 0.3)
    processes = np.maximum(rng.uniform(0.45, 0.8) * tubes, sponge_level * sponge) * (1.0 - soma_soft)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    nuc = rng.uniform(0.0, 0.3)
    nuc_c = np.asarray(centre) + rng.uniform(-0.2, 0.2, 2) * r0
    nucleus = 1.0 - nuc * np.exp(-0.5 * ((yy - nuc_c[0]) ** 2 + (xx - nuc_c[1]) ** 2) / (0.45 * r0) ** 2)
    soma_soft = (soma_soft * nucleus).astype(np.float32)

    # distance bands of the whole tree (for propagation delays)
    points, node = densify_tree(tree)
    raster = _raster(points, node, centre, shape)
    d_skel, (iy, ix) = ndi.distance_transform_edt(raster < 0, return_indices=True)
    nearest = raster[iy, ix]
    near_r = tree.radius[np.maximum(nearest, 0)]
    edges = np.linspace(0.0, tree.dist.max() + 1e-6, n_bands + 1)
    node_band = np.clip(np.searchsorted(edges, tree.dist, side="right") - 1, 0, n_bands - 1)
    band = np.where((nearest >= 0) & (d_skel <= near_r + 2.0), node_band[np.maximum(nearest, 0)], -1)
    band_dist = 0.5 * (edges[:-1] + edges[1:])

    # annotation: main branches at the annotator width (as measured: area / skeleton length),
    # covering 1.4-1.9 soma areas
    width = annotator_width(soma_area)
    ratio = float(rng.uniform(1.4, 1.9) if process_ratio is None else process_ratio)
    trunks = annotation == "trunks"
    keep = main_paths(tree) if trunks else select_main_branches(tree, centre, shape, soma, width=width,
                                                                  target_area=ratio * soma_area)
    draw = drawing_width(_raster(*densify_tree(tree, keep), centre, shape) >= 0, soma, width)
    if not trunks:  # the area target again, at the width actually drawn
        keep = select_main_branches(tree, centre, shape, soma, width=draw, target_area=ratio * soma_area)
    skeleton = _raster(*densify_tree(tree, keep), centre, shape) >= 0
    annotated = _dilate_to_width(skeleton, draw) & ~soma
    thin = _thin_lines(skeleton) & ~soma

    far_nodes = np.flatnonzero(tree.dist > 0.3 * tree.dist.max())
    n_micro = int(rng.integers(2, 7))
    micro = tree.pos[rng.choice(far_nodes, size=min(n_micro, far_nodes.size), replace=False)] \
        + np.asarray(centre) if far_nodes.size else np.zeros((0, 2))
    info = {
        "n_primary": n_prim,
        "reach_over_radius": [round(float(v), 2) for v in reach / r0],
        "annotation": annotation,
        "annotator_width": round(width, 2),
        "drawn_width": round(draw, 2),
        "measured_width": round(process_width(annotated), 2),
        "target_ratio": round(ratio, 3),
        "annotated_ratio": round(float(annotated.sum()) / float(soma.sum()), 3),
        "n_nodes": tree.n_nodes,
    }
    return AstrocyteShape(centre=centre, soma_area=float(soma_area), soma=soma, soma_soft=soma_soft,
                          processes=processes.astype(np.float32), band=band, band_dist=band_dist,
                          micro_centres=micro, annotated=annotated, thin=thin, info=info)


def membrane_labelled(cell: AstrocyteShape, rng: np.random.Generator) -> AstrocyteShape:
    """The same astrocyte as a membrane-targeted indicator (Lck-GCaMP) shows it.

    The indicator sits on the plasma membrane, so a pixel is as bright as the
    membrane area it sees. Through the soma, an optical section crosses the
    membrane at its edge: a bright rim (``rim_width`` 1-2 px, falling off
    inward) around an inside at 0.25-0.5 of it. Thin processes have the most
    membrane per volume (surface / volume ~ 2 / radius), so the spongy
    territory gains on the trunks: the process footprint is raised to a power
    of 0.45-0.7 and scaled to 0.6-0.9 of the rim. The shape, its annotation and
    its activity bands are the cell's own (annotators draw the same soma and
    processes whatever the indicator).

    Parameters
    ----------
    cell : AstrocyteShape
        As :func:`build_astrocyte` drew it (a cytosolic indicator).
    rng : numpy.random.Generator
        Draws the inside level, rim width, power and process level of this cell.

    Returns
    -------
    AstrocyteShape
        With new ``soma_soft`` and ``processes`` footprints, float32 in ``[0, 1]``.
    """
    from dataclasses import replace

    from scipy import ndimage as ndi

    inside = rng.uniform(0.25, 0.5)
    rim_width = rng.uniform(1.0, 2.0)
    power = rng.uniform(0.45, 0.7)
    level = rng.uniform(0.6, 0.9)
    depth = ndi.distance_transform_edt(cell.soma_soft > 0.5)  # px from the soma's edge, inward
    rim = inside + (1.0 - inside) * np.exp(-np.maximum(depth - 1.0, 0.0) / rim_width)
    soma_soft = (cell.soma_soft * rim).astype(np.float32)
    processes = (level * np.clip(cell.processes, 0.0, 1.0) ** power).astype(np.float32)
    info = {**cell.info, "label": "membrane", "inside_level": round(float(inside), 3),
            "rim_width": round(float(rim_width), 2), "process_power": round(float(power), 3),
            "process_level": round(float(level), 3)}
    return replace(cell, soma_soft=soma_soft, processes=processes, info=info)
