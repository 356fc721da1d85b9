"""Test-time flips: the network's probabilities averaged over mirror images of its input."""

from __future__ import annotations

import pytest
import torch


class _Lopsided(torch.nn.Module):
    """Logits that depend on where a pixel lies (not mirror-symmetric), so views differ."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ramp_y = torch.linspace(0, 3, h)[:, None].expand(h, w)
        ramp_x = torch.linspace(0, 2, w)[None, :].expand(h, w)
        return torch.stack([x[:, 0] + ramp_y, 2 * x[:, 0] - ramp_x, torch.zeros_like(x[:, 0])], dim=1)


def test_views_are_mirrored_back_and_their_probabilities_averaged() -> None:
    from astro3s.inference.network import flip_averaged

    net = _Lopsided()
    x = torch.randn(2, 1, 6, 5)
    views = [x, x.flip(3), x.flip(2), x.flip((2, 3))]
    dims = [(), (3,), (2,), (2, 3)]
    probs = [torch.softmax(net(v), 1) for v in views]
    expected = sum(p.flip(d) if d else p for p, d in zip(probs, dims, strict=True)) / 4
    got = torch.softmax(flip_averaged(net, 4)(x), 1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    two = torch.softmax(flip_averaged(net, 2)(x), 1)
    torch.testing.assert_close(two, (probs[0] + probs[1].flip(3)) / 2, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(two, probs[0])                     # the views did differ


def test_one_view_is_the_network_itself_and_wrapping_is_idempotent() -> None:
    from astro3s.inference.network import flip_averaged

    net = _Lopsided()
    assert flip_averaged(net, 1) is net
    wrapped = flip_averaged(net, 4)
    assert flip_averaged(wrapped, 4) is wrapped and flip_averaged(wrapped, 2) is wrapped

    class Module(torch.nn.Module):                               # a Lightning-style module: its .net
        def __init__(self) -> None:
            super().__init__()
            self.net = net

    assert flip_averaged(Module(), 1) is net
    with pytest.raises(ValueError, match="views"):
        flip_averaged(net, 3)


def test_the_option_is_checked_and_reaches_every_network_pass(tiny_movie, record_calls) -> None:
    import dataclasses

    import astro3s.inference.network as network
    from astro3s.errors import ConfigError
    from astro3s.inference import load_inference_model
    from astro3s.inference.cells import segment_movie
    from astro3s.inference.pipeline import InferenceOptions
    from astro3s.io import read_movie
    from astro3s.preprocess import PreprocessParams, preprocess

    assert InferenceOptions(preprocess=PreprocessParams()).test_time_flips == 1
    for bad in (3, 0, True, "4"):
        with pytest.raises(ConfigError, match="test_time_flips"):
            InferenceOptions(preprocess=PreprocessParams(), test_time_flips=bad)
    seen = record_calls(network, "_run_batches")
    model, options = load_inference_model("default", device="cpu", figures=False)
    with read_movie(tiny_movie) as movie:
        pre = preprocess(movie, options.preprocess, progress=False)
        _, plain, _ = segment_movie(pre, model, dataclasses.replace(options, test_time_flips=1))
        assert seen and all(type(args[0]).__name__ != "FlipAveraged" for args, _ in seen)
        seen.clear()
        _, flipped, _ = segment_movie(pre, model, dataclasses.replace(options, test_time_flips=4))
    assert seen and all(type(args[0]).__name__ == "FlipAveraged" for args, _ in seen)
    assert plain.n_cells >= 1 and flipped.n_cells >= 1
