"""Unit tests of astro3s.preprocess on small in-memory movies (fast)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from astro3s.errors import CheckpointError, ConfigError, InputError
from astro3s.preprocess import (PreprocessParams, activity_map, candidate_boxes, clahe, enhance,
                                extract_crops, find_candidates, frame_percentiles, load_params,
                                load_preprocessed, paste_crops, preprocess, save_params, save_preprocessed,
                                temporal_median, tile_coverage, tile_starts, tile_thresholds)
from astro3s.preprocess import _backend
from astro3s.preprocess._backend import irfft2, irfft2_rows, quantile_flat, quantile_lastaxis, rfft2
from astro3s.preprocess.local_filter import local_activity_filters
from astro3s.preprocess.motion import correct_frames

CENTRES = [(30, 30), (30, 80), (75, 50)]


def synthetic_movie(n_frames: int = 120, size: int = 112, *, seed: int = 0, motion: float = 1.0,
                    radius: float = 7.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three bright, active disc 'somata' on a textured background, moved by sub-pixel shifts.

    Returns the movie (float32), the soma labels and the true (dy, dx) shifts.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    for k, (cy, cx) in enumerate(CENTRES, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3) * 20 + 100
    events = rng.random((n_frames, len(CENTRES))) < 0.1
    activity = ndimage.uniform_filter1d(events.astype(float), 8, axis=0) * 8
    base = np.stack([labels == k for k in range(1, len(CENTRES) + 1)]).astype(float)
    base = ndimage.gaussian_filter(base, (0, 1, 1))
    clean = texture[None] + np.einsum("tk,kyx->tyx", 60 + 80 * activity, base)
    shifts = (rng.normal(size=(n_frames, 2)) * motion).astype(np.float32)
    spectra = np.fft.fft2(clean)
    moved = np.stack([np.fft.ifft2(ndimage.fourier_shift(s, d)).real for s, d in zip(spectra, shifts)])
    movie = rng.poisson(np.clip(moved, 0, None)).astype(np.float32)
    return movie, labels, shifts


@pytest.fixture(scope="module")
def small():
    return synthetic_movie()


@pytest.fixture(scope="module")
def small_params():
    return PreprocessParams(soma_area_range=(120, 200), tile_size=48, tile_step=20, filter_box=40,
                            crop_size=50, reference_frames=60)


@pytest.fixture(scope="module")
def small_result(small, small_params):
    return preprocess(small[0], small_params, progress=False)


def test_quantiles_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(33, 257)).astype(np.float32)
    for q in (0, 10, 50, 80, 90, 100, 37.5):
        np.testing.assert_allclose(quantile_lastaxis(x, q), np.percentile(x, q, axis=1), atol=1e-5)
        assert quantile_flat(x, q) == pytest.approx(np.percentile(x, q), abs=1e-5)
    big = rng.random((4, 300_000)).astype(np.float32)  # threaded path
    np.testing.assert_allclose(quantile_lastaxis(big, 80), np.percentile(big, 80, axis=1), atol=1e-5)


def test_shifts_recovered(small, small_result):
    _, _, true = small
    error = small_result.shifts - true
    error -= np.median(error, axis=0)  # the reference's own position is arbitrary
    assert np.sqrt((error**2).mean()) < 0.2
    # correcting by the estimate aligns the movie: the mean image gets sharper
    corrected_mean = small_result.corrected.load().mean(0)
    assert np.abs(np.diff(corrected_mean, axis=1)).mean() > np.abs(np.diff(small[0].mean(0), axis=1)).mean()


def test_stage_shapes_and_types(small, small_result, small_params):
    movie, labels, _ = small
    t, h, w = movie.shape
    r = small_result
    n = r.n_candidates
    assert r.shifts.shape == (t, 2) and r.shifts.dtype == np.float32
    for name in ("enhanced", "activity_map", "fov_map", "mean_image", "reference"):
        image = getattr(r, name)
        assert image.shape == (h, w) and image.dtype == np.float32, name
    assert 0 <= r.enhanced.min() and r.enhanced.max() <= 1
    assert 0 <= r.activity_map.min() and r.activity_map.max() <= t
    assert r.candidates.shape == (h, w) and r.candidates.dtype == np.uint16
    assert r.candidates.max() == n
    assert r.crops.shape == (n, 50, 50) and r.crops.dtype == np.float32
    assert r.crop_masks.shape == (n, 50, 50) and r.crop_masks.dtype == bool
    assert r.crop_boxes.shape == (n, 4) and r.crop_boxes.dtype == np.int32
    assert r.fov_mask.shape == (h, w) and r.fov_mask.dtype == bool
    assert r.corrected.shape == movie.shape
    # every disc is a candidate, and the crops hold the filtered enhanced image
    for k in range(1, labels.max() + 1):
        assert (r.candidates[labels == k] > 0).any()
    assert np.array_equal(r.fov_map, r.enhanced * r.fov_mask)
    assert np.all(r.crops[~r.crop_masks] == 0)


def test_stage_functions_on_arrays(small):
    movie = small[0]
    t, h, w = movie.shape
    assert frame_percentiles(movie, 10).shape == (t,)
    np.testing.assert_allclose(frame_percentiles(movie, 10), np.percentile(movie.reshape(t, -1), 10, axis=1),
                               rtol=1e-5)
    np.testing.assert_allclose(temporal_median(movie), np.median(movie, axis=0), rtol=1e-5)
    enhanced = enhance(movie)
    assert enhanced.shape == (h, w) and enhanced.dtype == np.float32
    act = activity_map(movie, size=48, step=20)
    assert act.shape == (h, w) and act.dtype == np.float32
    thr = tile_thresholds(movie[:5], [50, 80], size=48, step=20)
    assert thr.shape == (2, 5, len(tile_starts(h, 48, 20)), len(tile_starts(w, 48, 20)))
    assert np.all(thr[1] >= thr[0])


def test_tiles_cover_fov():
    assert tile_starts(256, 96, 40).tolist() == [0, 40, 80, 120, 160]  # ASTRA's grid
    assert tile_starts(250, 96, 40).tolist() == [0, 40, 80, 120, 154]
    assert tile_starts(50, 96, 40).tolist() == [0]
    assert tile_coverage((250, 70), size=96, step=40).min() >= 1


def test_clahe_equalises_and_keeps_order():
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random((64, 64)), 2).astype(np.float32)
    image = (image - image.min()) / np.ptp(image) * 0.2  # low contrast
    out = clahe(image, clip_limit=0.5, tiles=(8, 8))
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.ptp(out) > 0.5  # contrast stretched
    # in the corner only the first tile's mapping applies: monotonic there
    a, b = image[0:4, 0:4].ravel(), out[0:4, 0:4].ravel()
    order = np.argsort(a)
    assert np.all(np.diff(b[order]) >= -1e-6)



def test_isolated_hot_pixels_do_not_set_the_enhancement_scale():
    from astro3s.preprocess.enhance import enhance_image, image_top

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:96, :96]
    cells = sum(60 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0) for cy, cx in ((30, 30), (60, 70)))
    image = (ndimage.gaussian_filter(rng.random((96, 96)), 1.5) * 20 + cells).astype(np.float32)
    assert image_top(image) == image.max()  # an optical image keeps ASTRA's scaling exactly
    hot = image.copy()
    hot[[5, 50, 90], [80, 10, 45]] = 65535.0
    top = image_top(hot)
    assert top < 2 * image.max()  # the brightest structure, not the stuck pixels
    clean, spoilt = enhance_image(image), enhance_image(hot)
    assert len(np.unique(np.round(spoilt * 65535))) > 0.5 * len(np.unique(np.round(clean * 65535)))
    away = np.ones(image.shape, bool)
    away[[5, 50, 90], [80, 10, 45]] = False
    away = ndimage.binary_erosion(away, iterations=2)
    assert np.abs(spoilt - clean)[away].mean() < 0.05
    assert image_top(np.zeros((8, 8))) == 0


def test_lift_dim_background_keeps_a_vignetted_corner_and_leaves_an_even_image_alone():
    """ASTRA's clip at 0 blacks out a FOV's dim corners; the local floor raises them first."""
    from astro3s.preprocess.enhance import lift_dim_background

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:130, :150]
    cells = sum(40 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0) for cy, cx in ((12, 12), (65, 75), (115, 135)))
    even = (20 + rng.normal(0, 2, yy.shape) + cells).astype(np.float32)
    # an evenly lit median image (floor above 0 everywhere): exactly ASTRA's clip
    assert np.array_equal(lift_dim_background(even), np.maximum(even, 0))
    # vignetting: the frame's global low percentile lies above the corners' background
    r2 = ((yy - 65) / 65.0) ** 2 + ((xx - 75) / 75.0) ** 2
    vignetted = even * (1 - 0.3 * r2).astype(np.float32) - 14
    clipped, lifted = np.maximum(vignetted, 0), lift_dim_background(vignetted)
    assert lifted.shape == vignetted.shape and lifted.dtype == np.float32 and lifted.min() >= 0
    corner = (slice(0, 24), slice(0, 24))
    assert np.mean(clipped[corner] == 0) > 0.5  # the clip leaves the corner mostly black
    assert np.mean(lifted[corner] == 0) < 0.15  # the floor is a low percentile: a few stay at 0
    # the corner cell stands out of its lifted background as the centre cell does of its own
    contrast = lifted[12, 12] / np.median(lifted[corner])
    assert contrast > 2
    # the centre (its floor and its neighbours' above 0) is untouched
    assert np.array_equal(lifted[56:74, 66:84], clipped[56:74, 66:84])


def test_enhance_sigma_lifts_a_faint_thin_process_above_the_texture():
    """CLAHE on 65536 levels ranks noise into texture; a smoothing first lets a faint 4-px line stand out."""
    from astro3s.preprocess import enhance_image

    rng = np.random.default_rng(1)
    image = 0.3 + rng.normal(0, 0.05, (128, 128)).astype(np.float32)
    image[:, 62:66] += 0.04  # a process fainter than one noise SD per pixel
    image = np.clip(image, 0, 1)
    plain = enhance_image(image, tiles=(4, 4))
    assert np.array_equal(plain, enhance_image(image, tiles=(4, 4), smooth_sigma=0.0))  # 0: ASTRA's recipe

    def separation(enhanced):
        line, background = enhanced[:, 62:66], np.concatenate([enhanced[:, :56], enhanced[:, 72:]], axis=1)
        return (line.mean() - background.mean()) / background.std()

    smoothed = enhance_image(image, tiles=(4, 4), smooth_sigma=1.0)
    assert smoothed.dtype == np.float32 and 0 <= smoothed.min() and smoothed.max() <= 1
    assert separation(smoothed) > 2 * separation(plain)


def test_enhance_sigma_is_validated_and_redone_by_reselect():
    with pytest.raises(ConfigError, match="enhance_sigma"):
        PreprocessParams(enhance_sigma=-1.0)
    movie, _, _ = synthetic_movie(n_frames=60, size=96, motion=0.0)
    params = PreprocessParams(soma_area_range=(100, 200), motion_correction=False)
    first = preprocess(movie, params, progress=False)
    from astro3s.preprocess import reselect_candidates

    again = reselect_candidates(first, params.replace(enhance_sigma=1.0))
    fresh = preprocess(movie, params.replace(enhance_sigma=1.0), progress=False)
    assert not np.array_equal(again.enhanced, first.enhanced)
    np.testing.assert_array_equal(again.enhanced, fresh.enhanced)

def test_candidate_areas_scale_with_soma_size():
    activity = np.zeros((128, 128), np.float32)
    yy, xx = np.mgrid[:128, :128]
    for cy, cx in [(20, 20), (20, 100), (100, 20), (100, 100)]:
        activity[(yy - cy) ** 2 + (xx - cx) ** 2 <= 4**2] = 90  # ~50 px blobs
    small_cells, _ = find_candidates(activity, 100, soma_area_range=(50, 80), extension_threshold=None)
    assert small_cells.max() == 4 and small_cells.dtype == np.uint16
    large_cells, details = find_candidates(activity, 100, soma_area_range=(500, 900), extension_threshold=None)
    assert large_cells.max() == 0 and not details["converged"]


def test_extension_adds_faint_somata():
    activity = np.zeros((96, 96), np.float32)
    yy, xx = np.mgrid[:96, :96]
    for k, (cy, cx) in enumerate([(20, 20), (20, 70), (70, 20), (70, 70)]):
        activity[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 95 if k < 3 else 40  # one faint
    plain, _ = find_candidates(activity, 100, soma_area_range=(100, 150), expected_cells=3,
                               extension_threshold=None)
    extended, details = find_candidates(activity, 100, soma_area_range=(100, 150), expected_cells=3,
                                        extension_threshold=0.35)
    assert plain.max() == 3 and extended.max() == 4 and details["added"] == 1


def test_local_filter_keeps_active_pixels():
    rng = np.random.default_rng(0)
    stack = rng.normal(100, 5, size=(200, 30, 30)).astype(np.float32)
    stack[:, 10:20, 10:20] += 50  # bright and always active
    stack[::3, 0:4, 0:4] += 40  # active a third of the time
    masks = local_activity_filters(stack, percentile=90, pairs=[(0.25, 0.10), (0.9, 0.5), (0.25, 0.2)])
    assert masks.shape == (3, 30, 30) and masks.dtype == bool
    assert masks[0, 10:20, 10:20].all() and masks[0, 0:4, 0:4].all()
    # pure-noise pixels exceed the 90th percentile in ~10 % of frames: th2 = 0.2 drops them
    assert masks[2, 10:20, 10:20].all() and masks[2].sum() < 0.3 * masks[2].size
    assert not masks[1, 0:4, 0:4].any()  # stricter pair drops the intermittent pixels
    # negative-valued data work the same (shift invariance)
    shifted = local_activity_filters(stack - 1000, percentile=90, pairs=[(0.25, 0.10)])
    assert np.array_equal(shifted[0], masks[0])


def test_crops_paste_back():
    rng = np.random.default_rng(0)
    image = rng.random((100, 90)).astype(np.float32)
    boxes = candidate_boxes(np.array([[5.0, 5.0], [50.2, 44.9], [98.0, 88.0]]), image.shape, 40)
    assert boxes.tolist()[0] == [0, 0, 40, 40] and boxes.tolist()[2] == [60, 50, 100, 90]
    crops = extract_crops(image, boxes, crop_size=50)
    assert crops.shape == (3, 50, 50)
    back = paste_crops(crops, boxes, image.shape, reduce="max")
    inside = back != 0
    np.testing.assert_array_equal(back[inside], image[inside])
    multi = paste_crops(np.stack([crops, 2 * crops], axis=1), boxes, image.shape, reduce="mean")
    assert multi.shape == (2, 100, 90)


@pytest.mark.parametrize("cache", [True, False])
def test_preprocess_lifts_a_vignetted_fov_and_leaves_an_even_one_as_astra_clips_it(small_params, cache):
    """The streamed pass takes the median unclipped and lifts only an illumination fall-off (in memory or not)."""
    movie = synthetic_movie(60, 160, motion=0.0)[0]  # 5 x 5 blocks of 32 px (fewer: ASTRA's clip alone)
    params = small_params.replace(motion_correction=False, median_max_frames=1000 if cache else 30)
    lifted = preprocess(movie, params, progress=False, cache=cache)
    clipped = preprocess(movie, params.replace(lift_dim_background=False), progress=False, cache=cache)
    np.testing.assert_array_equal(lifted.median_image, clipped.median_image)  # evenly lit: nothing to lift
    assert lifted.median_image.min() >= 0 and lifted.details["dim_background_lifted"] == 0
    # brightness falling to 40 % in the corners, the background offset a frame's 10th percentile leaves above it
    size = movie.shape[1]
    yy, xx = np.mgrid[:size, :size]
    r2 = ((yy - (size - 1) / 2) / (size / 2)) ** 2 + ((xx - (size - 1) / 2) / (size / 2)) ** 2
    dim = (movie * (1 - 0.3 * r2)).astype(np.float32)
    lifted = preprocess(dim, params, progress=False, cache=cache)
    clipped = preprocess(dim, params.replace(lift_dim_background=False), progress=False, cache=cache)
    corner = (slice(0, 16), slice(0, 16))
    assert np.mean(clipped.median_image[corner] == 0) > 0.5
    assert np.mean(lifted.median_image[corner] == 0) < 0.2
    assert lifted.median_image.min() >= 0
    # recorded (summary.json's preprocess.dim_background_lifted): the share of the FOV raised
    assert 0.05 < lifted.details["dim_background_lifted"] < 0.9 and clipped.details["dim_background_lifted"] == 0


def test_chunked_equals_in_memory(small, small_params):
    movie = small[0][:60]
    whole = preprocess(movie, small_params.replace(chunk_frames=1000), progress=False)
    chunked = preprocess(movie, small_params.replace(chunk_frames=7), progress=False, cache=False)
    assert whole.corrected.cache is not None and chunked.corrected.cache is None
    np.testing.assert_allclose(chunked.shifts, whole.shifts, atol=1e-5)
    np.testing.assert_allclose(chunked.enhanced, whole.enhanced, atol=2e-3)
    np.testing.assert_allclose(chunked.activity_map, whole.activity_map, atol=1e-4)
    assert np.array_equal(chunked.candidates, whole.candidates)
    assert np.array_equal(chunked.crop_boxes, whole.crop_boxes)
    assert (chunked.crop_masks != whole.crop_masks).mean() < 1e-3
    # lazy corrected frames equal the cached ones
    np.testing.assert_allclose(chunked.corrected[10:20], whole.corrected[10:20], atol=1e-3)


@pytest.mark.parametrize("cache", [True, False])
def test_blocks_and_threads_do_not_change_results(small, small_params, monkeypatch, cache):
    # frame blocks run side by side on the cores: the result must not depend on the number of
    # threads nor on the block size (every value is per frame, per pixel or an integer count)
    movie = small[0][:60]
    params = small_params.replace(chunk_frames=25)
    frame_bytes = 4 * movie.shape[1] * movie.shape[2]
    runs = []
    for cores, block_frames in ((1, 25), (3, 3), (2, 7)):
        monkeypatch.setattr(_backend, "_cores", lambda cores=cores: cores)
        monkeypatch.setattr(_backend, "CACHE_BLOCK_BYTES", block_frames * frame_bytes)
        monkeypatch.setattr(_backend, "MIN_BLOCK_FRAMES", 1)
        runs.append(preprocess(movie, params, progress=False, cache=cache))
    for name in ("shifts", "reference", "mean_image", "enhanced", "activity_map", "candidates", "crop_boxes",
                 "crop_masks", "crops", "fov_map", "fov_mask"):
        for other in runs[1:]:
            assert np.array_equal(getattr(other, name), getattr(runs[0], name)), name
    assert runs[0].n_candidates > 0


def test_backend_blocks():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(5, 24, 30)).astype(np.float32)
    spectra = rfft2(frames)
    rows = np.array([0, 1, 2, 20, 22, 23])
    want = irfft2(spectra.copy(), (24, 30), overwrite_x=True)[:, rows]
    assert np.array_equal(irfft2_rows(spectra, (24, 30), rows), want)
    assert _backend.block_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)]
    seen = _backend.map_blocks(lambda item: (item, _backend._workers()), list(range(5)))
    assert [item for item, _ in seen] == list(range(5))
    if _backend._cores() > 1:  # calls inside the blocks are single-threaded
        assert {workers for _, workers in seen} == {1}
    # the blocked temporal median is the selection over each pixel's values
    movie = rng.normal(size=(41, 19, 23)).astype(np.float32)
    want = quantile_lastaxis(np.ascontiguousarray(movie.reshape(41, -1).T), 50.0).reshape(19, 23)
    for block_pixels in (None, 7, 1000):
        assert np.array_equal(temporal_median(movie, block_pixels=block_pixels), want)
    # with baselines: the median of the baseline-subtracted frames (not clipped), without their full copy
    baselines = rng.normal(size=41).astype(np.float32)
    want = temporal_median(movie - baselines[:, None, None])
    assert np.array_equal(temporal_median(movie, baselines=baselines, block_pixels=50), want)
    assert np.any(want < 0)


def test_select_pair_is_exact():
    # the bracketed selection must give np.partition's values, also when the bracket misses
    rng = np.random.default_rng(0)
    n = 40_000
    spiky = np.zeros(n, np.float32)
    spiky[::n // 4096] = 5.0  # the even subsample sees only the spikes
    cases = [rng.normal(size=n).astype(np.float32), np.sort(rng.normal(size=n)).astype(np.float32),
             rng.integers(0, 4, n).astype(np.float32), np.full(n, 2.0, np.float32), spiky,
             rng.normal(size=37).astype(np.float32)]
    for values in cases:
        for k in (0, 1, len(values) // 2, int(0.9 * len(values)), len(values) - 2, len(values) - 1):
            part = np.partition(values, k)
            want = (float(part[k]), float(part[k + 1:].min()) if k + 1 < len(values) else None)
            assert _backend.select_pair(values, k) == want


def test_selection_on_float_bits_is_exact():
    """Non-negative float32 values are selected as int32 bits: the same values as a float selection."""
    rng = np.random.default_rng(3)
    positive = (rng.random((50, 301)) * 300).astype(np.float32)
    with_zeros = np.maximum(rng.normal(size=(50, 301)), 0).astype(np.float32)
    with_zeros[:, ::7] = -0.0  # -0.0 reads as the smallest int32: still ordered below every positive value
    tiny = (rng.random((50, 301)) * 1e-38).astype(np.float32)  # subnormals
    mixed = rng.normal(size=(50, 301)).astype(np.float32)  # negative values: the float selection
    for values in (positive, with_zeros, tiny, mixed):
        ordered = np.sort(values, axis=1)
        for q in (0, 10, 50, 80, 100, 37.5):
            pos = q / 100 * (values.shape[1] - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, values.shape[1] - 1)
            want = ordered[:, lo] + np.float32(pos - lo) * (ordered[:, hi] - ordered[:, lo])
            assert np.array_equal(quantile_lastaxis(values, q), want)
            assert np.array_equal(quantile_lastaxis(values.copy(), q, overwrite_input=True), want)
        for k in (0, 150, 300):
            want = (float(ordered[0, k]), float(ordered[0, k + 1]) if k + 1 < values.shape[1] else None)
            assert _backend.select_pair(values[0].copy(), k) == want


def test_correct_frames_undoes_shift():
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random((64, 64)), 2).astype(np.float32)
    moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(image), (1.3, -0.7))).real.astype(np.float32)
    back = correct_frames(moved[None], np.array([[1.3, -0.7]]))[0]
    # the real FFT's Nyquist row/column cannot carry a sub-pixel phase: tiny residual
    np.testing.assert_allclose(back, image, atol=5e-3)
    assert np.abs(back - image).mean() < 1e-3


@pytest.mark.parametrize("case", ["constant", "one_frame", "nan", "tiny_frames"])
def test_bad_input_is_a_clear_error(case):
    movie = np.random.default_rng(0).random((20, 32, 32)).astype(np.float32)
    if case == "constant":
        movie = np.full((20, 32, 32), 7, np.uint16)
    elif case == "one_frame":
        movie = movie[:1]
    elif case == "nan":
        movie[5, 3, 3] = np.nan
    elif case == "tiny_frames":
        movie = movie[:, :4, :4]
    with pytest.raises(InputError) as info:
        preprocess(movie, progress=False)
    message = str(info.value)
    expected = {"constant": "constant", "one_frame": "frame", "nan": "NaN", "tiny_frames": "px"}[case]
    assert expected in message


def test_result_round_trip(tmp_path, small, small_result):
    path = save_preprocessed(small_result, tmp_path / "pp" / "preprocessed.npz")
    back = load_preprocessed(path, movie=small[0])
    for name in ("shifts", "enhanced", "activity_map", "candidates", "crops", "crop_masks", "crop_boxes",
                 "fov_map", "fov_mask", "mean_image", "reference"):
        got, want = getattr(back, name), getattr(small_result, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert back.params == small_result.params and back.shape == small_result.shape
    assert back.details["candidate_search"] == small_result.details["candidate_search"]
    np.testing.assert_allclose(back.corrected[3], small_result.corrected[3], atol=1e-3)
    with pytest.raises(InputError):
        load_preprocessed(tmp_path / "missing.npz")


def test_params_round_trip_and_validation(tmp_path):
    params = PreprocessParams(soma_area_range=(50, 120), th1=0.2, th2=0.07, extension_threshold=None)
    path = save_params(params, tmp_path / "params.yaml")
    assert load_params(path) == params
    assert load_params(tmp_path / "params.yaml").soma_area_range == (50.0, 120.0)
    (tmp_path / "bad.yaml").write_text("th1: 0.2\nthreshhold_start: 0.5\n")
    with pytest.raises(ConfigError, match="threshhold_start"):
        load_params(tmp_path / "bad.yaml")
    with pytest.raises(CheckpointError):
        load_params(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError):
        PreprocessParams(th1=1.5)
    with pytest.raises(ConfigError):
        PreprocessParams(crop_size=90)  # < filter_box + 2 * pad


def test_shipped_configs_load():
    from pathlib import Path

    from astro3s.cli._config import CONFIG_DIR

    files = sorted((Path(CONFIG_DIR) / "preprocess").glob("*.yaml"))
    assert any(f.name == "astra.yaml" for f in files)
    for f in files:
        load_params(f)
    astra = load_params(Path(CONFIG_DIR) / "preprocess" / "astra.yaml")
    defaults = PreprocessParams()
    # the command lines' preprocess group lists every field, so each can be set as preprocess.<field>=...
    import dataclasses

    import yaml

    listed = yaml.safe_load((Path(CONFIG_DIR) / "preprocess" / "astra.yaml").read_text())
    assert {f.name for f in dataclasses.fields(PreprocessParams)} <= set(listed)
    assert (astra.activity_percentile, astra.th1, astra.th2, astra.tile_size, astra.tile_step) == (
        defaults.activity_percentile, 0.25, 0.10, 96, 40)


@pytest.mark.parametrize("cached", [True, False])
def test_crop_filters_reuse_the_masks_of_boxes_already_filtered(small, monkeypatch, cached):
    """A second call (a re-selection of candidates) computes only its new boxes, and gives what a fresh
    corrected movie gives; beyond the budget (a frame subsample) nothing is kept."""
    from astro3s.preprocess import local_filter, pipeline
    from astro3s.preprocess.motion import CorrectedMovie

    movie = small[0]
    shifts = np.zeros((len(movie), 2), np.float32)

    def corrected() -> CorrectedMovie:
        return CorrectedMovie(movie, shifts, cache=movie if cached else None)

    first = np.array([[0, 0, 40, 40], [10, 30, 50, 70], [60, 60, 100, 100]])
    second = np.array([[60, 60, 100, 100], [5, 5, 45, 45], [0, 0, 40, 40]])  # two boxes seen, one new
    settings = dict(percentile=90.0, pairs=[(0.25, 0.10)], stride=1)
    calls = []
    real = local_filter.local_activity_filters
    monkeypatch.setattr(pipeline, "local_activity_filters", lambda stack, **kw: calls.append(1) or real(stack, **kw))
    shared = corrected()
    pipeline.crop_filters(shared, first, **settings)
    assert len(calls) == 3
    again, frames = pipeline.crop_filters(shared, second, **settings)
    assert len(calls) == 4 and frames == len(movie)
    fresh, _ = pipeline.crop_filters(corrected(), second, **settings)
    assert np.array_equal(again, fresh) and len(calls) == 4 + 3
    # other filter settings are other masks
    pipeline.crop_filters(shared, second, percentile=80.0, pairs=[(0.25, 0.10)], stride=1)
    assert len(calls) == 7 + 3
    # a budget too small for every frame: subsampled by the number of boxes, so computed whole every time
    calls.clear()
    tight = corrected()
    budget = 4 * movie.size / 2**20  # the movie is twice half of it; the crops' quarter holds ~12 frames
    for _ in range(2):
        _, used = pipeline.crop_filters(tight, first, memory_budget_mb=budget, **settings)
    if cached:  # a cached movie is filtered on every frame, whatever the budget
        assert used == len(movie) and len(calls) == 3
    else:
        assert used < len(movie) and len(calls) == 6 and not tight.filter_masks
