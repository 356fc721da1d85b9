"""The held-out family: recipes, output contract, determinism, distractors, independence."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astro3s.heldout.members import MEMBER_ORDER, MEMBERS, SEED_BASE, member_seed, sample_params
from astro3s.heldout.morphology import annotator_width
from astro3s.heldout.scene import build_scene
from astro3s.heldout.write import render_member_movie

HELDOUT_DIR = Path(__file__).resolve().parents[1] / "astro3s" / "heldout"
FORBIDDEN = ("astro3s.simulate", "astro3s.data", "astro3s.models", "astro3s.preprocess", "astro3s.inference")
# reduced renders: FOV side x scale, object counts x scale^2, few frames
SMALL = {"scale": 0.4, "n_frames": 16}
SMALL_SCALE = {"giant": 0.7, "dense": 0.3}


@pytest.fixture(scope="module")
def rendered():
    """``rendered(member, index=0)`` -> (movie, scene) at reduced size, cached per module."""
    cache: dict = {}

    def get(member: str, index: int = 0):
        key = (member, index)
        if key not in cache:
            cache[key] = render_member_movie(member, index, scale=SMALL_SCALE.get(member, SMALL["scale"]),
                                             n_frames=SMALL["n_frames"])
        return cache[key]

    return get


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


# ---------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("member", MEMBER_ORDER)
def test_full_size_params_follow_the_recipe(member: str) -> None:
    recipe = MEMBERS[member]
    for index in (0, 1):
        p = sample_params(member, index)
        T, H, W = p.shape
        assert T == recipe.n_frames and H == W and H in recipe.sizes
        assert recipe.fs[0] <= p.fs <= recipe.fs[1] and 1.0 <= p.fs <= 10.0
        assert recipe.n_cells[0] + recipe.n_cut[0] <= len(p.soma_areas) <= recipe.n_cells[1] + recipe.n_cut[1]
        lo, hi = recipe.soma_area
        assert all(lo - 0.1 <= a <= hi + 0.1 for a in p.soma_areas)
        for name in ("n_out_of_focus", "n_blobs", "n_neurons", "n_vessels", "n_outside", "n_cut"):
            bounds = getattr(recipe, name)
            assert bounds[0] <= getattr(p, name) <= bounds[1], name
        assert p.seed == member_seed(member, index) >= SEED_BASE
        assert p.motion_sd < 1.5


def test_seeds_are_unique_and_in_the_heldout_range() -> None:
    seeds = [member_seed(m, k) for m in MEMBER_ORDER for k in range(5)]
    assert len(set(seeds)) == len(seeds)
    assert min(seeds) >= 900_000
    with pytest.raises(KeyError):
        member_seed("nope", 0)


def test_annotator_width_matches_the_consensus_annotations() -> None:
    # per-cell medians of ASTRA's consensus processes (experiments/measure_annotations.py)
    for soma_area, annotated in ((190, 3.7), (102, 4.1), (2920, 9.0)):
        assert annotator_width(soma_area) == pytest.approx(annotated, rel=0.2)
    assert annotator_width(10) == 3.0 and annotator_width(1e6) == 12.0


# ---------------------------------------------------------------------------- output contract


@pytest.mark.parametrize("member", MEMBER_ORDER)
def test_member_renders_with_the_contract(member: str, rendered) -> None:
    movie, scene = rendered(member)
    T, H, W = scene.params.shape
    assert movie.dtype == np.uint16 and movie.shape == (T, H, W) == (SMALL["n_frames"], H, W)
    assert movie.std() > 0
    soma, proc, thin = scene.soma, scene.processes, scene.thin
    for labels in (soma, proc, thin):
        assert labels.dtype == np.uint16 and labels.shape == (H, W)
    ids = set(np.unique(soma)) - {0}
    assert ids == set(range(1, len(scene.cells) + 1)) and len(ids) >= 1
    assert set(np.unique(proc)) - {0} <= ids and set(np.unique(thin)) - {0} <= ids
    assert not np.any((soma > 0) & (proc > 0)) and not np.any((soma > 0) & (thin > 0))
    assert np.all(proc[thin > 0] > 0), "thin processes lie inside the processes"
    assert np.count_nonzero(thin) < np.count_nonzero(proc)
    lo, hi = MEMBERS[member].soma_area
    for cell in scene.cells:
        mask = soma == cell["id"]
        area = int(mask.sum())
        assert area <= hi + 1
        assert 0 <= cell["centre"][0] <= H - 1 and 0 <= cell["centre"][1] <= W - 1
        if not _touches_border(mask):
            assert lo - 1 <= area <= hi + 1, (cell["id"], area)
        if MEMBERS[member].annotation == "area":
            assert 1.2 <= cell["annotated_ratio"] <= 2.2  # whole annotation, before FOV cropping
        else:  # main paths to their tips: ASTRA's D1 cells span 0.7-3.2 (10th-95th percentile)
            assert 0.5 <= cell["annotated_ratio"] <= 4.0


@pytest.mark.parametrize("member,scale", [("lookalikes", 1.0), ("dense", 0.5)])
def test_annotated_process_area_is_about_1_4_to_1_9_soma(member: str, scale: float) -> None:
    scene = build_scene(sample_params(member, 0, scale=scale, n_frames=4))
    H, W = scene.soma.shape
    ratios = []
    for cell in scene.cells:
        y, x = cell["centre"]
        reach = max(cell["reach_over_radius"]) * np.sqrt(cell["soma_area"] / np.pi) + cell["annotator_width"]
        if min(y, x, H - 1 - y, W - 1 - x) > reach:  # processes not cut by the border
            ratios.append(np.count_nonzero(scene.processes == cell["id"]) / cell["soma_area"])
    assert len(ratios) >= 2
    assert 1.0 <= np.mean(ratios) <= 2.5, ratios


def test_rendering_is_deterministic_by_seed(rendered) -> None:
    movie, scene = rendered("neurons")
    again, scene2 = render_member_movie("neurons", 0, scale=SMALL["scale"], n_frames=SMALL["n_frames"])
    np.testing.assert_array_equal(movie, again)
    np.testing.assert_array_equal(scene.soma, scene2.soma)
    np.testing.assert_array_equal(scene.processes, scene2.processes)
    other, _ = rendered("neurons", 1)
    assert other.shape != movie.shape or not np.array_equal(other, movie)


def test_distractors_get_no_labels() -> None:
    params = sample_params("mixed", 0, scale=0.6, n_frames=4)
    full = build_scene(params)
    assert full.distractors["neurons"] >= 1 and full.distractors["out_of_focus"] >= 1
    bare = build_scene(dataclasses.replace(params, n_out_of_focus=0, n_blobs=0, n_neurons=0, n_outside=0))
    for name in ("soma", "processes", "thin"):
        np.testing.assert_array_equal(getattr(full, name), getattr(bare, name))
    assert not np.array_equal(full.static, bare.static)
    for obj in full.objects:
        if obj["kind"] == "neuron":
            y, x = np.rint(obj["centre"]).astype(int)
            assert full.soma[y, x] == 0


def test_outside_cells_are_rendered_but_unlabelled() -> None:
    scene = build_scene(sample_params("border", 0, scale=0.6, n_frames=4))
    H, W = scene.soma.shape
    outside = [o for o in scene.objects if o["kind"] == "outside"]
    assert outside and all(not (0 <= o["centre"][0] < H and 0 <= o["centre"][1] < W) for o in outside)
    assert any(c["cut_by_border"] for c in scene.cells)
    assert all(0 <= c["centre"][0] <= H - 1 and 0 <= c["centre"][1] <= W - 1 for c in scene.cells)


# ---------------------------------------------------------------------------- independence


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_heldout_sources_do_not_import_the_training_code() -> None:
    files = sorted(HELDOUT_DIR.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for name in _imported_modules(path):
            assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"
        text = path.read_text()
        assert "import_module(\"astro3s.simulate" not in text and "astro3s.simulate import" not in text


def test_training_imports_do_not_load_heldout_and_heldout_import_is_cheap() -> None:
    code = ("import sys, astro3s.data, astro3s.simulate, astro3s.cli.train; "
            "print(sorted(m for m in sys.modules if m.startswith('astro3s.heldout')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    code = ("import sys, astro3s.heldout; "
            "print(sorted(m for m in ('scipy', 'skimage', 'matplotlib', 'astro3s.heldout.scene') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- writing


def test_generate_family_writes_readable_folders(tmp_path: Path) -> None:
    from astro3s.heldout import generate_family
    from astro3s.io import find_movies, read_labels, read_movie

    folders = generate_family(tmp_path, members=["short", "vessels"], per_member=1, scale=0.3, n_frames=8,
                              progress=False)
    assert [f.name for f in folders] == ["heldout_short_0", "heldout_vessels_0"]
    for folder in folders:
        movie = read_movie(folder / f"{folder.name}.tif")
        meta = json.loads((folder / "meta.json").read_text())
        assert set(meta) == {"family", "member", "seed", "fs", "shape", "n_cells", "soma_areas",
                             "distractors", "params"}
        assert meta["family"] == "heldout" and list(movie.shape) == meta["shape"]
        assert movie.dtype == np.uint16 and movie.fs == pytest.approx(meta["fs"])
        assert set(meta["distractors"]) == {"out_of_focus", "blobs", "neurons", "vessels"}
        soma = read_labels(folder / "ground_truth" / "soma.tif")
        proc = read_labels(folder / "ground_truth" / "processes.tif")
        thin = read_labels(folder / "ground_truth" / "processes_thin.tif")
        assert soma.shape == proc.shape == thin.shape == tuple(meta["shape"][1:])
        assert int(soma.max()) == meta["n_cells"] == len(meta["soma_areas"])
        assert meta["soma_areas"] == [int(np.count_nonzero(soma == i)) for i in range(1, meta["n_cells"] + 1)]
        assert (folder / "overview.png").stat().st_size > 1000
    assert sorted(find_movies(tmp_path)) == sorted(f / f"{f.name}.tif" for f in folders)
    family = json.loads((tmp_path / "family.json").read_text())
    assert [m["name"] for m in family["movies"]] == [f.name for f in folders]
    assert family["movies"][0]["seed"] == member_seed("short", 0)
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
    stamp = (folders[0] / "meta.json").stat().st_mtime_ns
    generate_family(tmp_path, members=["short"], per_member=1, scale=0.3, n_frames=8, progress=False)
    assert (folders[0] / "meta.json").stat().st_mtime_ns == stamp  # complete folders are kept


def test_command_line(tmp_path: Path) -> None:
    from astro3s.heldout.__main__ import main

    assert main(["--out", str(tmp_path), "--members", "low_snr", "--per-member", "1", "--scale", "0.25",
                 "--frames", "6", "--no-overview"]) == 0
    folder = tmp_path / "heldout_low_snr_0"
    assert (folder / "meta.json").is_file() and not (folder / "overview.png").exists()
    assert main(["--out", str(tmp_path), "--per-member", "0"]) == 2
    assert main(["--out", str(tmp_path), "--first-index", "-1"]) == 2


def test_fresh_seeds_start_after_the_reported_family(tmp_path: Path) -> None:
    from astro3s.heldout.__main__ import main

    assert main(["--out", str(tmp_path), "--members", "short", "--per-member", "2", "--first-index", "4",
                 "--scale", "0.25", "--frames", "6", "--no-overview"]) == 0
    family = json.loads((tmp_path / "family.json").read_text())
    assert [m["name"] for m in family["movies"]] == ["heldout_short_4", "heldout_short_5"]
    assert [m["seed"] for m in family["movies"]] == [member_seed("short", 4), member_seed("short", 5)]
    assert family["first_index"] == 4
    # none of them is a seed of the reported family (indices 0-3)
    assert not {m["seed"] for m in family["movies"]} & {member_seed("short", k) for k in range(4)}


def test_main_paths_run_from_each_root_to_one_tip() -> None:
    from astro3s.heldout.morphology import build_astrocyte, grow_tree, main_paths

    rng = np.random.default_rng(3)
    angles = np.array([0.0, 2.1, 4.2])
    roots = 6.0 * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    tree = grow_tree(rng, roots, angles, np.full(3, 30.0), soma_radius=7.0, step=1.0,
                     n_attractors=np.full(3, 25), root_radius=np.full(3, 2.0))
    keep = main_paths(tree)
    kept_children = np.bincount(tree.parent[keep & (tree.parent >= 0)], minlength=tree.n_nodes)
    assert kept_children[keep].max() == 1  # a chain: never two kept children
    ends = keep & (kept_children == 0)
    assert ends.sum() == 3 and (tree.tips[ends] == 1).all()  # one tip per primary
    assert keep[tree.parent[keep & (tree.parent >= 0)]].all()  # connected to its root
    assert keep.sum() < tree.n_nodes  # side branches left out
    # each kept child is the one with the most tips among its siblings
    for node in np.flatnonzero(keep & (tree.parent >= 0)):
        siblings = np.flatnonzero(tree.parent == tree.parent[node])
        assert tree.tips[node] == tree.tips[siblings].max()
    with pytest.raises(ValueError, match="annotation"):
        build_astrocyte(rng, 200.0, annotation="polygons")


def test_the_long_member_traces_processes_as_far_as_annotators() -> None:
    from astro3s.metrics import cell_process_figures

    reach = {}
    for member in ("long", "lookalikes"):
        scene = build_scene(sample_params(member, 0, n_frames=4))
        reach[member] = np.median(cell_process_figures(scene.soma, scene.processes)[:, 3])
    # ASTRA's D1 consensus: median 2.74 soma radii beyond the soma's edge (p25-p75 2.15-3.61)
    assert 2.15 <= reach["long"] <= 3.61
    assert reach["long"] > reach["lookalikes"] + 0.5
    # appended: the earlier members keep their seeds and their cells
    assert MEMBER_ORDER.index("long") == MEMBER_ORDER.index("crop") + 1
    assert sample_params("lookalikes", 0).process_reach == (2.0, 4.0)


def test_correlated_detector_noise_matches_the_real_crop_and_keeps_its_variance() -> None:
    from astro3s.heldout.optics import Detector, detect

    clean = np.full((24, 96, 96), 1.0, np.float32)
    base = dict(photons_per_unit=30.0, gain=20.0, gain_shape=4.0, offset=300.0, read_noise=6.0)

    def lag_correlations(counts: np.ndarray) -> tuple[float, float]:
        d = np.diff(counts.astype(np.float32), axis=0)
        d -= d.mean()
        return tuple(float((d[:, :, :-k] * d[:, :, k:]).mean() / d.var()) for k in (1, 2))

    white = detect(np.random.default_rng(3), clean, Detector(**base))
    # the default draws nothing more: white-noise members keep their movies byte for byte
    assert np.array_equal(white, detect(np.random.default_rng(3), clean, Detector(**base, correlated_fraction=0.0)))
    correlated = detect(np.random.default_rng(3), clean, Detector(**base, correlated_fraction=0.2))
    assert abs(lag_correlations(white)[0]) < 0.03
    lag1, lag2 = lag_correlations(correlated)
    assert 0.12 <= lag1 <= 0.2 and 0.04 <= lag2 <= 0.11  # astroCaST's test crop: 0.15 and 0.07
    assert correlated.astype(np.float32).std() == pytest.approx(white.astype(np.float32).std(), rel=0.1)
    assert correlated.mean() == pytest.approx(white.mean(), rel=0.01)


def test_only_the_correlated_member_draws_correlated_noise() -> None:
    recipe = MEMBERS["correlated"]
    for index in range(4):
        fraction = sample_params("correlated", index).detector["correlated_fraction"]
        assert recipe.noise_correlation[0] <= fraction <= recipe.noise_correlation[1]
    assert all("correlated_fraction" not in sample_params(member, 0).detector
               for member in MEMBER_ORDER if member != "correlated")
    assert MEMBER_ORDER[-4:] == ("long", "correlated", "faint", "membrane")  # appended: earlier seeds kept


def test_only_the_faint_member_has_cells_dim_at_rest_and_they_are_as_active() -> None:
    # the other members draw nothing more (their movies stay byte for byte what they were)
    for member in MEMBER_ORDER:
        if member != "faint":
            params = sample_params(member, 0, scale=0.4, n_frames=4)
            assert params.dim_fraction == 0.0
            assert all(cell["rest_scale"] == 1.0 for cell in build_scene(params).cells)
    recipe = MEMBERS["faint"]
    assert all(recipe.dim_fraction[0] <= sample_params("faint", i).dim_fraction <= recipe.dim_fraction[1]
               for i in range(4))
    scene = build_scene(sample_params("faint", 0, n_frames=4))
    rest = np.array([cell["rest_scale"] for cell in scene.cells])
    dim = rest < 1.0
    assert dim.any() and (~dim).any()
    assert np.all((rest[dim] >= recipe.dim_rest[0]) & (rest[dim] <= recipe.dim_rest[1]))
    assert all(cell["active"] for cell, d in zip(scene.cells, dim) if d)  # a dim silent cell would be invisible
    # in the movie (full size, 150 frames): dim at rest, events as large in photons, so a large dF/F
    movie, scene = render_member_movie("faint", 0, n_frames=150)
    frames = movie.astype(np.float32)
    background = np.median(frames[:, (scene.soma == 0) & (scene.processes == 0)], axis=1)
    dim = np.array([cell["rest_scale"] for cell in scene.cells]) < 1.0
    assert dim.any() and (~dim).any()
    traces = np.stack([frames[:, scene.soma == cell["id"]].mean(1) - background for cell in scene.cells])
    resting = np.median(traces, axis=1)
    events = np.percentile(traces, 95, axis=1) - resting
    assert np.median(resting[dim]) < 0.5 * np.median(resting[~dim])
    assert np.median(events[dim]) > 0.7 * np.median(events[~dim])
    assert np.median(events[dim] / resting[dim]) > 2 * np.median(events[~dim] / resting[~dim])

