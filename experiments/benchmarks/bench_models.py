"""Size and speed of the segmentation networks.

    python experiments/benchmarks/bench_models.py                      # CPU, all networks
    python experiments/benchmarks/bench_models.py --networks unet dense_up_small --steps 5
    python experiments/benchmarks/bench_models.py --device cuda --amp  # GPU, mixed precision

For each network prints the parameter count, the inference time (median of
``--repeats``) of one 256×256 field of view and of a batch of 8 single-cell
96×96 crops, and the training throughput (samples/s) over ``--steps`` optimizer
steps on ``--batch-size`` random 96×96 crops with ASTRA's loss (after one
warm-up step). Timings depend on the machine and its load: report the device.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

NETWORKS: dict[str, tuple[str, dict]] = {
    "dense_up": ("dense_up", {}),
    "dense_up_small": ("dense_up", {"depths": [1, 2, 1], "width": 0.25}),
    "unet": ("unet", {}),
    "unetpp": ("unetpp", {"deep_supervision": True}),
}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    run()  # warm-up
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch of 96×96 crops")
    parser.add_argument("--repeats", type=int, default=3, help="timed inference repeats")
    args = parser.parse_args()

    from astro3s.models import AstraLoss, build_network

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def autocast() -> contextlib.AbstractContextManager:
        if not args.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; amp: {args.amp}; torch {torch.__version__}")
    print(
        f"{'network':<15} {'params M':>9} {'FOV 256² ms':>12} {'8 crops ms':>11} "
        f"{'train samples/s':>16} {'peak GPU GB':>12}"
    )
    generator = torch.Generator().manual_seed(0)
    fov = torch.randn(1, 1, 256, 256, generator=generator).to(device)
    crops = torch.randn(8, 1, 96, 96, generator=generator).to(device)
    train_image = torch.randn(args.batch_size, 1, 96, 96, generator=generator).to(device)
    train_target = torch.randint(0, 3, (args.batch_size, 96, 96), generator=generator).to(device)
    loss_fn = AstraLoss()

    for key in args.networks:
        network_name, kwargs = NETWORKS[key]
        torch.manual_seed(0)
        net = build_network(network_name, **kwargs).to(device)
        n_params = sum(p.numel() for p in net.parameters()) / 1e6
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        net.eval()

        def infer(batch: torch.Tensor) -> Callable[[], object]:
            def run() -> object:
                with torch.inference_mode(), autocast():
                    return net(batch)  # noqa: F821 - bound before the call (deleted later)

            return run

        t_fov = _median_seconds(infer(fov), device, args.repeats)
        t_crops = _median_seconds(infer(crops), device, args.repeats)

        net.train()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(enabled=args.amp and device.type == "cuda")

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)  # noqa: F821 - bound before the call (deleted later)
            with autocast():
                heads = net.forward_heads(train_image)  # noqa: F821 - bound before the call (deleted later)
            loss = torch.stack([loss_fn(h.float(), train_target) for h in heads]).mean()
            scaler.scale(loss).backward()
            scaler.step(optimizer)  # noqa: F821 - bound before the call (deleted later)
            scaler.update()

        train_step()  # warm-up
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step()
        _synchronize(device)
        throughput = args.steps * args.batch_size / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        print(
            f"{key:<15} {n_params:>9.2f} {1e3 * t_fov:>12.1f} {1e3 * t_crops:>11.1f} "
            f"{throughput:>16.1f} {peak:>12.2f}",
            flush=True,
        )
        del net, optimizer


if __name__ == "__main__":
    main()
