"""The cross-check family: independence, seeds, determinism, truth properties, output contract."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astro3s.crosscheck.members import MEMBER_ORDER, MEMBERS, SEED_BASE, draw_params, member_seed, movie_name
from astro3s.crosscheck.scene import build_scene
from astro3s.crosscheck.truth import annotator_width
from astro3s.crosscheck.write import render_member_movie

CC_DIR = Path(__file__).resolve().parents[1] / "astro3s" / "crosscheck"
FORBIDDEN = ("astro3s.simulate", "astro3s.heldout", "astro3s.data", "astro3s.models", "astro3s.preprocess",
             "astro3s.inference", "astro3s.postprocess", "astro3s.metrics")
ALLOWED_THIRD_PARTY = {"numpy", "scipy", "tifffile", "tqdm", "matplotlib"}
# reduced scenes: FOV side x scale (object counts x scale^2), few frames
SCALE = {"dense": 0.35, "fast": 1.0, "zoom": 0.7}
N_FRAMES = 6


@pytest.fixture(scope="module")
def scenes():
    """``scenes(member, index=0)`` -> Scene at reduced size, cached per module."""
    cache: dict = {}

    def get(member: str, index: int = 0):
        if (member, index) not in cache:
            p = draw_params(member, index, scale=SCALE.get(member, 0.6), n_frames=N_FRAMES)
            cache[member, index] = build_scene(p)
        return cache[member, index]

    return get


# ---------------------------------------------------------------------------- independence


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, relative level, at module level) of every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, 0, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level, id(node) in top))
    return out


def test_crosscheck_imports_only_allowed_modules() -> None:
    files = sorted(CC_DIR.glob("*.py"))
    assert len(files) >= 8
    stdlib = set(sys.stdlib_module_names)
    for path in files:
        for module, level, module_level in _imports(path):
            where = f"{path.name}: {module}"
            if level > 0:  # relative: inside the package
                continue
            assert not module.startswith(FORBIDDEN), where
            root = module.split(".")[0]
            if root == "astro3s":
                assert module == "astro3s.io" or module.startswith(("astro3s.io.", "astro3s.crosscheck")), where
            else:
                assert root in ALLOWED_THIRD_PARTY or root in stdlib or root == "__future__", where
            if root == "matplotlib":
                assert not module_level, f"{where} must be imported lazily, inside the function"


def test_import_does_no_work_and_loads_no_other_generator() -> None:
    code = ("import sys, astro3s.crosscheck as cc\n"
            "light = sorted(m for m in sys.modules if m.startswith('astro3s.crosscheck.') or m == 'numpy')\n"
            "cc.generate_family; cc.build_scene; cc.render_movie; cc.write_overview\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('astro3s.simulate', 'astro3s.heldout',\n"
            "             'astro3s.inference', 'astro3s.data', 'astro3s.models', 'torch')))\n"
            "print(light, bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"


# ---------------------------------------------------------------------------- recipes and seeds


def test_seeds_are_unique_and_clear_of_the_other_families() -> None:
    seeds = [member_seed(m, k) for m in MEMBER_ORDER for k in range(8)]
    assert len(set(seeds)) == len(seeds)
    assert SEED_BASE == 970_000 and min(seeds) >= 970_000 and max(seeds) < 980_000
    assert member_seed("zoom", 3) == 970_000 + 1000 * MEMBER_ORDER.index("zoom") + 3
    with pytest.raises(KeyError):
        member_seed("nope", 0)
    assert movie_name("d1", 2) == "crosscheck_d1_2"


@pytest.mark.parametrize("member", MEMBER_ORDER)
def test_full_size_params_follow_the_recipe(member: str) -> None:
    recipe = MEMBERS[member]
    for index in (0, 1, 2):
        p = draw_params(member, index)
        assert p.seed == member_seed(member, index)
        assert recipe.n_frames[0] <= p.n_frames <= recipe.n_frames[1]
        assert recipe.fs[0] <= p.fs <= recipe.fs[1]
        assert recipe.n_true[0] <= p.n_true <= recipe.n_true[1]
        assert recipe.photons[0] <= p.photons <= recipe.photons[1]
        assert recipe.fwhm_z_um[0] <= p.fwhm_z_um <= recipe.fwhm_z_um[1]
        side = p.height
        assert p.width == side and side % 8 == 0
        assert (recipe.sizes[0] <= side <= recipe.sizes[1]) if recipe.size_range else side in recipe.sizes
        json.dumps(p.__dict__)  # JSON-serialisable


def test_annotator_width_matches_the_consensus_medians() -> None:
    assert annotator_width(223) == pytest.approx(5.3, rel=0.01)
    assert annotator_width(3000) == pytest.approx(10.1, rel=0.05)
    assert annotator_width(5) == 3.0 and annotator_width(1e7) == 12.0


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_movie_and_truth() -> None:
    a_movie, a = render_member_movie("fast", 0, scale=0.5, n_frames=8)
    b_movie, b = render_member_movie("fast", 0, scale=0.5, n_frames=8)
    assert a_movie.dtype == np.uint16 and a_movie.shape == (8, a.params.height, a.params.width)
    np.testing.assert_array_equal(a_movie, b_movie)
    for name in ("soma", "processes", "processes_thin"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c_movie, _ = render_member_movie("fast", 1, scale=0.5, n_frames=8)
    assert c_movie.shape != a_movie.shape or not np.array_equal(c_movie, a_movie)


# ---------------------------------------------------------------------------- truth


def _components(mask: np.ndarray) -> list[np.ndarray]:
    from scipy.ndimage import label

    lab, n = label(mask, structure=np.ones((3, 3)))
    return [lab == i for i in range(1, n + 1)]


@pytest.mark.parametrize("member", MEMBER_ORDER)
def test_truth_labels_are_consistent(member: str, scenes) -> None:
    from scipy.ndimage import binary_dilation

    s = scenes(member)
    n = s.n_cells
    assert n >= 1
    assert set(np.unique(s.soma)) == set(range(n + 1))
    assert set(np.unique(s.processes)) <= set(range(n + 1))
    assert not ((s.soma > 0) & (s.processes > 0)).any()
    assert not ((s.soma > 0) & (s.processes_thin > 0)).any()
    thin = s.processes_thin > 0
    assert (s.processes[thin] == s.processes_thin[thin]).all()  # same ids, thin inside the wide processes
    for k in range(1, n + 1):
        near = binary_dilation(s.soma == k, structure=np.ones((3, 3)), iterations=2)  # a 1-px gap allowed
        for comp in _components(s.processes == k):
            assert (comp & near).any(), f"cell {k}: a process piece does not touch its soma"


def _skeleton_length(skeleton: np.ndarray) -> float:
    """Euclidean length of a one-pixel skeleton: 1 per 4-neighbour link, sqrt 2 per bare diagonal link."""
    s = skeleton.astype(bool)
    straight = (s[:, :-1] & s[:, 1:]).sum() + (s[:-1, :] & s[1:, :]).sum()
    diagonal = ((s[:-1, :-1] & s[1:, 1:] & ~s[:-1, 1:] & ~s[1:, :-1]).sum()
                + (s[:-1, 1:] & s[1:, :-1] & ~s[:-1, :-1] & ~s[1:, 1:]).sum())
    return float(straight + np.sqrt(2) * diagonal)


@pytest.mark.parametrize("member", MEMBER_ORDER)
def test_process_width_and_area_follow_the_annotators(member: str, scenes) -> None:
    from skimage.morphology import skeletonize

    widths, ratios = [], []
    for index in range(3):  # the cells of three reduced movies
        s = scenes(member, index)
        for k in range(1, s.n_cells + 1):
            area = int((s.soma == k).sum())
            proc = s.processes == k
            ratios.append(proc.sum() / area)
            length = _skeleton_length(skeletonize(proc))
            if length >= 2 * annotator_width(area):
                widths.append(proc.sum() / length / annotator_width(area))
    ratios = np.array(ratios)
    assert np.mean((ratios >= 0.3) & (ratios <= 4.0)) > 0.5, ratios  # most cells
    assert 0.5 <= np.median(ratios) <= 3.0, ratios
    assert widths, "no cell with a traced process"
    assert 0.6 <= np.median(widths) <= 1.4, widths


def _crowded_scene():
    """A small d1 scene crowded with neurons and out-of-focus astrocytes."""
    import dataclasses

    p = draw_params("d1", 3, scale=0.6, n_frames=N_FRAMES)
    return build_scene(dataclasses.replace(p, n_neurons=80, n_out_of_focus=12))


@pytest.mark.parametrize("member", [*MEMBER_ORDER, "crowded"])
def test_distractors_are_not_truth(member: str, scenes) -> None:
    s = _crowded_scene() if member == "crowded" else scenes(member)
    if member == "crowded":
        assert s.distractors["neurons"] >= 20 and s.distractors["out_of_focus_astrocytes"] >= 6
    H, W = s.soma.shape
    true = np.array(s.objects["true"]).reshape(-1, 3)
    others = np.array(s.objects["out_of_focus"] + s.objects["cut"]).reshape(-1, 3)
    assert len(true) == s.n_cells
    for k in range(1, s.n_cells + 1):  # each truth soma sits on an in-focus soma, not on a distractor
        rows, cols = np.nonzero(s.soma == k)
        centroid = np.array([cols.mean(), rows.mean()])
        d_true = np.hypot(*(true[:, :2] - centroid).T).min()
        assert d_true < np.sqrt(rows.size / np.pi) + 2
        if len(others):
            assert d_true < np.hypot(*(others[:, :2] - centroid).T).min()
    for x, y, _z in s.objects["neurons"]:
        r, c = int(round(y)), int(round(x))
        if 0 <= r < H and 0 <= c < W:
            assert s.soma[r, c] == 0 and s.processes[r, c] == 0


def test_truth_somata_are_bright_in_the_movie() -> None:
    movie, s = render_member_movie("d1", 1, scale=0.6, n_frames=12)
    mean = movie.mean(0)
    assert mean[s.soma > 0].mean() > np.percentile(mean, 85)
    assert s.distractors["neurons"] >= 1 or s.distractors["out_of_focus_astrocytes"] >= 1


def test_only_the_membrane_member_rims_its_somata() -> None:
    from scipy import ndimage as ndi

    assert MEMBER_ORDER[-1] == "membrane"  # appended: the earlier members keep their seeds
    assert all(draw_params(m, 0).membrane_shell == 0.0 for m in MEMBER_ORDER if m != "membrane")
    assert draw_params("membrane", 0).membrane_shell > 0
    movie, s = render_member_movie("membrane", 0, n_frames=12)
    mean = movie.mean(0)
    background = np.median(mean[(s.soma == 0) & (s.processes == 0)])
    ratios = []
    for k in np.unique(s.soma[s.soma > 0]):  # a few cells
        soma = s.soma == k
        core = ndi.binary_erosion(soma, iterations=3)
        rim = soma & ~ndi.binary_erosion(soma, iterations=2)
        if core.sum() >= 10:
            ratios.append((np.median(mean[core]) - background) / (np.median(mean[rim]) - background))
    assert len(ratios) >= 2 and np.median(ratios) < 0.8  # the truth is the whole cross-section, the core dim


# ---------------------------------------------------------------------------- writing


def _small_run(out: Path, *extra: str) -> int:
    from astro3s.crosscheck.__main__ import main

    return main(["--out", str(out), "--members", "fast", "d1", "--per-member", "1", "--first-index", "2",
                 "--scale", "0.4", "--n-frames", "5", *extra])


def test_cli_writes_the_contract_and_keeps_complete_folders(tmp_path: Path) -> None:
    import tifffile

    assert _small_run(tmp_path, "--no-overview") == 0
    family = json.loads((tmp_path / "family.json").read_text())
    assert family["family"] == "crosscheck" and family["per_member"] == 1 and family["first_index"] == 2
    assert set(family["members"]) == {"fast", "d1"} and family["seed_base"] == 970_000
    assert [m["name"] for m in family["movies"]] == ["crosscheck_fast_2", "crosscheck_d1_2"]
    for entry in family["movies"]:
        folder = tmp_path / entry["name"]
        meta = json.loads((folder / "meta.json").read_text())
        assert {"family", "member", "seed", "fs", "shape", "n_cells", "soma_areas", "distractors",
                "params"} <= set(meta)
        assert meta["family"] == "crosscheck" and meta["seed"] == entry["seed"] == member_seed(entry["member"], 2)
        movie = tifffile.imread(folder / f"{entry['name']}.tif")
        assert movie.dtype == np.uint16 and list(movie.shape) == meta["shape"] == entry["shape"]
        labels = [tifffile.imread(folder / "ground_truth" / f"{n}.tif")
                  for n in ("soma", "processes", "processes_thin")]
        for lab in labels:
            assert lab.dtype == np.uint16 and lab.shape == movie.shape[1:]
        assert meta["n_cells"] == len(meta["soma_areas"]) == int(labels[0].max())
        assert meta["soma_areas"] == [int((labels[0] == k).sum()) for k in range(1, meta["n_cells"] + 1)]
        assert not (folder / "overview.png").exists()
    assert not list(tmp_path.glob(".*.part"))
    marker = tmp_path / "crosscheck_fast_2" / "marker"
    marker.write_text("kept")
    stamp = (tmp_path / "crosscheck_fast_2" / "meta.json").stat().st_mtime_ns
    assert _small_run(tmp_path, "--no-overview") == 0
    assert marker.exists() and (tmp_path / "crosscheck_fast_2" / "meta.json").stat().st_mtime_ns == stamp


def test_overview_is_written(tmp_path: Path) -> None:
    from astro3s.crosscheck.write import write_member_movie

    folder = write_member_movie(tmp_path, "fast", 0, scale=0.4, n_frames=5)
    assert (folder / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_write_leaves_no_half_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import astro3s.io
    from astro3s.crosscheck.write import write_member_movie

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(astro3s.io, "write_labels", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_member_movie(tmp_path, "fast", 0, scale=0.4, n_frames=5, overview=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    folder = write_member_movie(tmp_path, "fast", 0, scale=0.4, n_frames=5, overview=False)
    assert (folder / "meta.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
