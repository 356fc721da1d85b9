"""Tests of the domain overlay (astro3s.correlation.figures): composition, clean-up, the PNG file."""

from __future__ import annotations


import numpy as np
import pytest

from astro3s.correlation import figures
from astro3s.correlation.figures import (PALETTE, cell_colours, clean_domains, compose_overlay, plot_domains,
                                         stretch_image)


def _disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _scene(shape: tuple[int, int] = (64, 80), seed: int = 0):
    """A textured image and two cells: soma disks, a process bar each, domains around them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image = (100 + 20 * np.sin(yy / 5.0) + 10 * np.cos(xx / 7.0) + rng.normal(0, 2, shape)).astype(np.float32)
    soma = np.zeros(shape, np.uint16)
    processes = np.zeros(shape, np.uint16)
    domains = np.zeros(shape, np.uint16)
    for cid, (cy, cx) in enumerate([(20, 20), (40, 58)], start=1):
        domains[_disk(shape, (cy, cx), 12)] = cid
        processes[cy - 1:cy + 2, cx - 10:cx + 11] = cid
        soma[_disk(shape, (cy, cx), 4)] = cid
    processes[soma > 0] = 0
    return image, soma, processes, domains


# ----------------------------------------------------------------------------- composition


def test_background_is_the_stretched_image_outside_cells():
    image, soma, processes, domains = _scene()
    rgb = compose_overlay(image, soma, processes, domains)
    assert rgb.shape == (*image.shape, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    outside = (soma == 0) & (processes == 0) & (clean_domains(domains) == 0)
    grey = stretch_image(image)
    for channel in range(3):  # untouched grey: equal channels, equal to the stretched image
        np.testing.assert_allclose(rgb[..., channel][outside], grey[outside], atol=1e-6)
    # and it follows the input image (a monotone transform of it)
    assert np.corrcoef(rgb[..., 0][outside], image[outside])[0, 1] > 0.9
    # a different image gives a different background
    other = compose_overlay(image[::-1].copy(), soma, processes, domains)
    assert not np.allclose(other[outside], rgb[outside])


def test_soma_pixels_carry_the_cell_colour():
    image, soma, processes, domains = _scene()
    lut = cell_colours(np.array([1, 2]))
    rgb = compose_overlay(image, soma, np.zeros_like(processes), np.zeros_like(domains), lut=lut)
    grey = stretch_image(image)
    for cid, (cy, cx) in ((1, (20, 20)), (2, (40, 58))):
        core = _disk(image.shape, (cy, cx), 2)  # away from the outline
        expected = grey[core, None] * (1 - figures._SOMA_FILL) + lut[cid] * figures._SOMA_FILL
        np.testing.assert_allclose(rgb[core], expected, atol=1e-5)
        # the outline is (nearly) the pure colour
        ring = (soma == cid) & ~_disk(image.shape, (cy, cx), 3.2)
        np.testing.assert_allclose(rgb[ring], np.broadcast_to(lut[cid], rgb[ring].shape), atol=1e-5)
    assert not np.allclose(lut[1], lut[2])


def test_fills_are_layered_domain_then_processes_then_soma():
    image, soma, processes, domains = _scene()
    image[:] = 50.0  # flat: the stretch gives black, the fills alone remain
    rgb = compose_overlay(image, soma, processes, domains)
    colour = PALETTE[0]
    d, p, s = figures._DOMAIN_FILL, figures._PROCESS_FILL, figures._SOMA_FILL
    np.testing.assert_allclose(rgb[12, 20], colour * d, atol=1e-5)  # domain only
    np.testing.assert_allclose(rgb[20, 27], colour * (d * (1 - p) + p), atol=1e-5)  # process over domain
    np.testing.assert_allclose(rgb[20, 20], colour * (d * (1 - s) + s), atol=1e-5)  # soma over domain
    assert np.all(rgb[0, 0] == 0)


def test_enlarged_raster_keeps_the_geometry():
    image, soma, processes, domains = _scene()
    scale = 4
    rgb = compose_overlay(image, soma, processes, domains, scale=scale)
    assert rgb.shape == (image.shape[0] * scale, image.shape[1] * scale, 3)
    flat = compose_overlay(np.zeros_like(image), soma, np.zeros_like(processes), np.zeros_like(domains),
                           scale=scale)
    coloured = flat.sum(axis=2) > 0
    ys, xs = np.nonzero(coloured[:, : 40 * scale])  # cell 1
    # the centre of the soma at (20, 20) is the centre of pixels 80..83 in the enlarged image
    assert abs(ys.mean() - (20 * scale + (scale - 1) / 2)) < 0.5
    assert abs(xs.mean() - (20 * scale + (scale - 1) / 2)) < 0.5
    # area scales with scale^2 (the smoothing of the edges changes it a little)
    assert abs(coloured[:, : 40 * scale].sum() / scale**2 - (soma == 1).sum()) < 0.15 * (soma == 1).sum()


def test_no_cells_is_the_grey_image():
    image, soma, _, _ = _scene()
    empty = np.zeros_like(soma)
    rgb = compose_overlay(image, empty, empty, empty, scale=2)
    grey = np.repeat(np.repeat(stretch_image(image), 2, axis=0), 2, axis=1)
    np.testing.assert_allclose(rgb, np.repeat(grey[..., None], 3, axis=2))


def test_bad_inputs_are_refused():
    image, soma, processes, domains = _scene()
    with pytest.raises(ValueError, match="shape"):
        compose_overlay(image, soma[:10], processes, domains)
    with pytest.raises(ValueError, match="integer"):
        compose_overlay(image, soma.astype(np.float32), processes, domains)
    with pytest.raises(ValueError, match="2-D"):
        compose_overlay(image[None], soma, processes, domains)


def test_stretch_image_handles_flat_and_nan_images():
    assert not stretch_image(np.full((5, 5), 3.0)).any()
    assert not stretch_image(np.full((5, 5), np.nan)).any()
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    image[0, 0] = np.nan
    out = stretch_image(image, (0, 100), gamma=1.0)
    assert out[0, 0] == 0 and out[-1, -1] == pytest.approx(1.0) and np.all(np.diff(out.ravel()[1:]) >= 0)


# ----------------------------------------------------------------------------- domain clean-up


def test_clean_domains_drops_specks_and_closes_holes_without_merging():
    domains = np.zeros((40, 60), np.int32)
    domains[5:25, 5:25] = 1
    domains[10, 10] = 0  # a one-pixel hole
    domains[15:17, 15:17] = 2  # a speck of domain 2 (4 px) inside domain 1
    domains[5:25, 27:45] = 2  # domain 2, one empty column away from domain 1
    domains[30, 50] = 1  # a stray pixel of domain 1
    domains[35:37, 5:7] = 3  # a domain that is small altogether: kept
    out = clean_domains(domains, min_size=6)
    assert out[10, 10] == 1  # hole closed
    assert np.all(out[15:17, 15:17] == 1)  # speck of 2 dropped, its pixels filled by 1
    assert out[30, 50] == 0  # stray pixel dropped
    assert np.all(out[35:37, 5:7] == 3)  # the only piece of domain 3 stays
    assert set(np.unique(out[5:25, 25:27])) <= {1, 2}  # the gap is split, labels not mixed up
    assert np.all(out[5:25, 5:25] == 1) and np.all(out[5:25, 27:45] == 2)
    assert out.dtype == domains.dtype
    empty = np.zeros((4, 4), np.uint16)
    assert not clean_domains(empty).any()


# ----------------------------------------------------------------------------- the file


def test_plot_domains_writes_a_png_atomically(tmp_path):
    import matplotlib.image as mpimg

    image, soma, processes, domains = _scene()
    path = plot_domains(image, soma, processes, domains, path=tmp_path / "overlay.png", title="scene",
                        threshold=0.6, pixel_size_um=0.5)
    assert path == tmp_path / "overlay.png"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]  # no temporary file left
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < path.stat().st_size < 5_000_000
    png = mpimg.imread(path)
    assert png.ndim == 3 and 400 < png.shape[0] < 2000 and 400 < png.shape[1] < 2000
    # the colour of cell 1 (red) appears: pixels much redder than they are green or blue
    red = (png[..., 0] > 0.6) & (png[..., 1] < 0.5 * png[..., 0]) & (png[..., 2] < 0.5 * png[..., 0])
    assert red.sum() > 100

    # a failed write leaves nothing behind, and never a half file under the name
    with pytest.raises(ValueError):
        plot_domains(image, soma, processes, domains, path=tmp_path / "overlay.unknownformat")
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]


def test_plot_domains_without_cells(tmp_path):
    image, soma, _, _ = _scene()
    empty = np.zeros_like(soma)
    path = plot_domains(image, empty, empty, empty, path=tmp_path / "empty.png", threshold=float("nan"))
    assert path.stat().st_size > 5_000


def test_plot_domains_paints_100_cells_into_one_raster(tmp_path):
    shape = (512, 512)
    rng = np.random.default_rng(1)
    soma = np.zeros(shape, np.uint16)
    processes = np.zeros(shape, np.uint16)
    domains = np.zeros(shape, np.uint16)
    centres = np.stack(np.meshgrid(np.arange(25, 512, 50), np.arange(25, 512, 50)), -1).reshape(-1, 2)
    for cid, (cy, cx) in enumerate(centres, start=1):  # a loop over cells to build the test scene
        box = (slice(cy - 22, cy + 23), slice(cx - 22, cx + 23))
        yy, xx = np.mgrid[box]
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        domains[box][(r2 <= 20**2) & (rng.random(r2.shape) < 0.8)] = cid  # speckled
        processes[box][(r2 <= 15**2) & ((np.abs(yy - cy) <= 1) | (np.abs(xx - cx) <= 1))] = cid
        soma[box][r2 <= 6**2] = cid
    image = rng.normal(100, 10, shape).astype(np.float32)
    # what keeps it fast (about 0.6 s on one free core; timed by bench_pipeline's write stage, not
    # here): the cells are painted into one raster, not drawn as a contour or patch per cell
    from matplotlib.figure import Figure

    drawn = []
    real_savefig = Figure.savefig

    def savefig(fig, *args, **kwargs):
        drawn.append([(len(ax.images), len(ax.collections), len(ax.patches), len(ax.texts)) for ax in fig.axes])
        return real_savefig(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", savefig)
        plot_domains(image, soma, processes, domains, path=tmp_path / "overlay.png", threshold=0.5)
    images, collections, patches, texts = drawn[0][0]
    assert (images, collections, patches) == (1, 0, 0)
    assert len(centres) <= texts <= len(centres) + 2  # an id per cell (+ the scale bar's label)
    assert (tmp_path / "overlay.png").stat().st_size > 0


def test_label_positions_do_not_overlap():
    boxes = [(10.0, 20.0, 10.0, 20.0)] * 3 + [(40.0, 50.0, 40.0, 50.0)]
    pos = np.array(figures._label_positions(boxes, (6.0, 4.0), (64, 64)))
    for i in range(len(pos)):
        for j in range(i):
            assert abs(pos[i, 0] - pos[j, 0]) >= 6.0 or abs(pos[i, 1] - pos[j, 1]) >= 4.0
    assert np.all((pos[:, 0] >= 1.5) & (pos[:, 0] <= 61.5) & (pos[:, 1] >= 0.5) & (pos[:, 1] <= 62.5))
    # outside the cell's box
    x, y = pos[0]
    assert not (10 <= x <= 20 and 10 <= y <= 20)


def test_a_cell_id_sits_at_its_soma_not_at_its_long_process(tmp_path):
    # cell 1: soma on the left, one process running 80 px right, ending next to cell 2's soma
    shape = (64, 128)
    soma = np.zeros(shape, np.uint16)
    processes = np.zeros(shape, np.uint16)
    soma[28:36, 8:16] = 1
    processes[31:33, 16:96] = 1
    soma[10:18, 100:108] = 2
    from matplotlib.figure import Figure

    texts = []
    real_savefig = Figure.savefig

    def savefig(fig, *args, **kwargs):
        texts.extend((t.get_text(), t.get_position()) for ax in fig.axes for t in ax.texts)
        return real_savefig(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", savefig)
        plot_domains(np.zeros(shape, np.float32), soma, processes, np.zeros_like(soma), path=tmp_path / "o.png")
    x, y = dict(texts)["1"]
    assert x < 30 and 15 < y < 50          # beside its soma (box x 8-16, y 28-36), not at x ~96 by cell 2
    x, y = dict(texts)["2"]
    assert x > 85


@pytest.mark.parametrize("width_um, expected", [(512.0, 100.0), (100.0, 20.0), (40.0, 5.0), (2000.0, 200.0)])
def test_scale_bar_length(width_um, expected):
    assert figures._scale_bar_um(width_um) == expected


def test_a_tiny_domain_survives_the_display_smoothing():
    domains = np.zeros((30, 30), np.uint16)
    domains[10, 10] = 1  # one pixel: the Gaussian smoothing alone would erase it
    domains[20:26, 5:25] = 2
    for scale in (1, 3):
        rgb = compose_overlay(np.zeros((30, 30), np.float32), np.zeros_like(domains), np.zeros_like(domains),
                              domains, scale=scale)
        assert rgb[10 * scale + scale // 2, 10 * scale + scale // 2].sum() > 0


# ----------------------------------------------------------------------------- traces and the soma heat map


def _event_traces():
    """Traces of a soma and a process whose raw fluorescence carries a swinging neuropil, which their
    surround shows too, and the events table (which keeps the traces the events were detected on)."""
    from astro3s.correlation import RoiTraces
    from astro3s.events import roi_events
    from astro3s.simulate.signals import event_train

    fs, n = 5.0, 600
    t = np.arange(n) / fs
    rng = np.random.default_rng(0)
    neuropil = 0.4 * np.sin(2 * np.pi * t / 23.0) + 0.3 * np.sin(2 * np.pi * t / 9.0)
    own = np.column_stack([event_train(t, np.array([20.0, 70.0]), np.ones(2), np.full(2, 0.5), np.full(2, 4.0)),
                           event_train(t, np.array([21.0]), np.ones(1), np.full(1, 0.5), np.full(1, 4.0))])
    f = (100.0 * (1 + own) + 20.0 * neuropil[:, None] + rng.normal(0, 2.0, own.shape)).astype(np.float32)
    fneu = (50.0 + 20.0 * neuropil[:, None] + rng.normal(0, 0.5, own.shape)).astype(np.float32)
    f0 = np.full(f.shape, 100.0, np.float32)
    traces = RoiTraces(names=["Soma_001", "Proc_001_01"], cell_ids=np.array([1, 1]), kinds=["soma", "process"],
                       dff=(f - f0) / f0, f0=f0, f=f, n_pixels=np.array([30, 10]), fs=fs, f0_method="running",
                       fneu=fneu)
    table, _ = roi_events([traces])
    return traces, table


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib figure saved from now on (the figure functions close theirs)."""
    from matplotlib.figure import Figure

    saved: list = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def test_plot_traces_draws_the_trace_the_events_were_detected_on(tmp_path, monkeypatch):
    from astro3s.correlation import plot_traces

    traces, table = _event_traces()
    saved = _drawn(monkeypatch)
    plot_traces(traces, path=tmp_path / "traces.png", events=table)
    ax = saved[-1].axes[0]
    detected = table.detected_dff(["Soma_001"])[:, 0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), detected, atol=1e-6)  # the first ROI, offset 0
    # not the dF/F of traces.csv: the neuropil's swings (+-0.14 dF/F) are gone
    quiet = np.abs(np.arange(len(detected)) / traces.fs - 52.0) < 10.0  # between the events
    assert np.ptp(detected[quiet]) < 0.5 * np.ptp(traces.dff[quiet, 0])
    assert "neuropil-corrected" in ax.get_title() and "as the events were detected" in ax.get_title()
    # without a table that keeps its traces (no events, or read from events.csv): the dF/F, said so
    plot_traces(traces, path=tmp_path / "plain.png")
    ax = saved[-1].axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), traces.dff[:, 0])
    assert ax.get_title().startswith("dF/F")


def test_heat_map_rows_are_the_detected_traces():
    from types import SimpleNamespace

    from astro3s.inference.report import detected_rows, soma_rows

    traces, table = _event_traces()
    _, rows = soma_rows(traces)
    heat, corrected = detected_rows(table, ["Soma_001"], rows)
    assert corrected and heat.shape == rows.shape
    np.testing.assert_allclose(heat[0], table.detected_dff(["Soma_001"])[:, 0], atol=1e-6)
    # a soma the table did not analyse keeps its dF/F; a table without traces leaves every row
    heat, corrected = detected_rows(table, ["Soma_009"], rows)
    assert not corrected and np.array_equal(heat, rows)
    assert detected_rows(SimpleNamespace(roi=[], onset_frame=np.zeros(0)), ["Soma_001"], rows)[1] is False
    assert detected_rows(None, ["Soma_001"], rows)[1] is False
