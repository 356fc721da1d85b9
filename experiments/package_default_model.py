"""Package a trained checkpoint as the bundled default model, with its model card.

    python experiments/package_default_model.py RUN_DIR/checkpoints/epoch_XXX.ckpt \
        [--eval experiments/results/default_model.md] [--train-log RUN_DIR]

Writes ``astro3s/resources/models/default/``:

- ``model.ckpt``: the weights and hyper-parameters only (no optimizer state), so
  the file stays small; loaded by ``astro3s.models.load_model("default")``;
- ``preprocess.yaml``: the pre-processing parameters the model was trained with
  (copied from beside the checkpoint);
- ``MODEL_CARD.md``: network, training data, command, held-out scores (the table written by
  ``experiments/evaluate_model.py``); its hand-written sections (``## Limitations`` to the end)
  and, without a training run's ``scores.json``, its line of test scores are kept from the card
  already there, so that regenerating the card never loses what was measured by hand.

How to regenerate the shipped model from scratch (CPU, ~1.5 h on 2 cores)::

    python -m astro3s.cli.train experiment=default_model
    python experiments/package_default_model.py logs/train/runs/<run>/checkpoints/last.ckpt
    python experiments/evaluate_model.py --out experiments/results/default_model.md
    python experiments/package_default_model.py <same ckpt> --eval experiments/results/default_model.md

(The shipped model is the two-stage recipe of its card; its stage-2 checkpoint was packaged with
``--note "These are the epochs of stage 2, after the 20 of stage 1 (see Training data)."``.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "astro3s" / "resources" / "models" / "default"
KEEP = ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step", "AstroDataModule")


def strip_checkpoint(source: Path, target: Path) -> dict:
    """Copy the parts of a Lightning checkpoint inference needs; returns them."""
    raw = torch.load(source, map_location="cpu", weights_only=True)
    slim = {k: raw[k] for k in KEEP if k in raw}
    slim["state_dict"] = {k: v.float().contiguous() for k, v in slim["state_dict"].items()}
    from astro3s.io import atomic_path

    with atomic_path(target, suffix=".ckpt") as tmp:
        torch.save(slim, tmp)
    return slim


LIMITATIONS = "## Limitations"
TRAIN_LINE = "Test FOVs of the training run"


def kept_parts(card: str | None) -> tuple[str | None, str | None]:
    """The hand-kept parts of an existing card: its test-score line and its text from ``## Limitations`` on."""
    if not card:
        return None, None
    train_line = next((line for line in card.splitlines() if line.startswith(TRAIN_LINE)), None)
    tail = card[card.index(LIMITATIONS):] if LIMITATIONS in card else None
    return train_line, tail


def model_card(slim: dict, *, checkpoint: Path, eval_table: str | None, train_scores: dict | None,
               note: str = "", size_mb: float | None = None, previous: str | None = None) -> str:
    """The card's text; ``previous`` (the card already there) supplies the hand-kept parts."""
    kept_train_line, kept_tail = kept_parts(previous)
    hp = slim.get("hyper_parameters", {})
    net = hp.get("net_config", {})
    n_params = sum(v.numel() for k, v in slim["state_dict"].items() if not k.endswith("num_batches_tracked"))
    split = (slim.get("AstroDataModule") or {}).get("split") or {}
    lines = [
        "# Model card: astro3s default model",
        "",
        "The network `astro3s-infer` uses unless `checkpoint=` names another. The rules applied to its",
        "output at inference (binning of large-soma FOVs, a 2x2-binned pass for the large somata of the others,",
        "the soma-blur rule, the process threshold, the FOV",
        "pass alone where no crop looked, soma-size filters widened to each movie's fitted scale, the",
        "look-alike classifier of `astro3s/resources/lookalike_model.json`) and the pre-processing's extensions",
        "(CLAHE tiles of at least 32 px, the candidate-search fallback, candidates at median-image blobs) are part",
        "of the scores below: `astro3s.postprocess.CombineParams` and `astro3s.inference.segment_movie`. Loaded with",
        "`astro3s.models.load_model(\"default\")`; its pre-processing parameters are `preprocess.yaml`",
        "in this folder.",
        "",
        "## Network",
        "",
        f"- `{net.get('_target_', net.get('name', '?'))}` with "
        f"{json.dumps({k: v for k, v in net.items() if k != '_target_'})}",
        f"- {n_params / 1e6:.2f} M parameters, float32; input: one 96×96 crop (or a whole FOV map), "
        + ("two channels, the enhanced median image and the movie's local correlation image (Fisher-scaled, "
           "`astro3s/preprocess/network_input.py`), each mean-subtracted; "
           if int(net.get("in_channels", 1)) == 2 else "mean-subtracted; ")
        + "output: softmax over (processes, soma, background).",
        *([f"- Size: `model.ckpt` {size_mb:.1f} MB (the network's cost on a D1-size movie: see Size and cost)."]
          if size_mb is not None else []),
        f"- Trained {int(slim.get('epoch', -1)) + 1} epoch(s) ({slim.get('global_step', '?')} steps) on 2 CPU cores; "
        + ("the weights at the end of the last epoch (a fixed schedule: the validation ASTRA F1 of its 3 FOVs "
           "moves by a few hundredths between epochs, too noisy to choose among them)."
           if checkpoint.name == "last.ckpt" else
           "the checkpoint with the best validation ASTRA F1 of whole-pipeline cells (`val/astra_f1`).")
        + (f" {note}" if note else ""),
        "",
        "## Training data",
        "",
        "Simulated only, in two stages, both on `conf/data/default_mix.yaml` as the simulator of 2026-12-04",
        "(evening) draws it: `d1_like` ×10, `randomised` ×10 (every simulator parameter drawn from ranges",
        "wider than any real dataset: size, zoom, photons, noise, kinetics, motion, neuropil, neurons, vessels,",
        "look-alikes, and the nuisance structure: tissue texture at scales of 0.7-80 px, spatially correlated",
        "detector noise, elongated PSFs with a scattering halo), `d4_like` ×3, and stand-ins on the real D1 (×6)",
        "and D4 (×2) consensus layouts (simulated activity on the published cell shapes). Each FOV",
        "pre-processed with its own soma scale. Processes are drawn as ASTRA's annotators draw a cell's",
        "processes (4.3 px wide at D1 scale, growing as soma_area**0.264, traced 1.6-3.6 soma radii out, as",
        "measured cell by cell on the consensus RoiSets: `experiments/measure_annotations.py`), with look-alikes",
        "that are never ground truth (out-of-focus astrocytes, soft blobs). Stage 1 (`experiment=default_model`,",
        "20 epochs from scratch); stage 2 (`experiment=default_model_finetune`, 6 epochs from the stage-1",
        "weights at a third of the learning rate) widens the zoom augmentation to ×0.5-×2 on half the samples.",
        "Augmentations otherwise ASTRA's set (rotations, flips, blur, noise, salt-and-pepper, scaling,",
        "perspective, intensity, optical distortion, elastic). Whole presets `d2_like` and `d3_like` (and the",
        "D2/D3 layouts) are held out of training entirely.",
        "",
        "**Held-out family.** The scores below come first from `astro3s.heldout`, a second generator written",
        "independently of the training simulator (its own morphology, PSF, noise model, neuropil and",
        "distractors), with seeds 900000+. No training code imports it (a test checks this), and no training",
        "run has seen its movies.",
    ]
    if split:
        lines += ["", f"Validation FOVs: {', '.join(split.get('val', []))}."]
    lines += [
        "",
        "## Command",
        "",
        "```bash",
        "python -m astro3s.cli.train experiment=default_model                     # stage 1 -> RUN1",
        "python -m astro3s.cli.train experiment=default_model_finetune model.init_weights=RUN1/checkpoints/last.ckpt",
        "python -m astro3s.heldout --out data/heldout_family",
        "python experiments/evaluate_model.py --heldout data/heldout_family --out experiments/results/default_model.md",
        f"python experiments/package_default_model.py RUN2/checkpoints/{checkpoint.name} "
        "--eval experiments/results/default_model.md",
        "```",
        "",
        "## Scores on movies no training run saw",
        "",
    ]
    if eval_table:
        body = eval_table.split("\n", 2)[2] if eval_table.startswith("# ") else eval_table
        lines += [body.strip(), ""]
    else:
        lines += ["(run `python experiments/evaluate_model.py --out experiments/results/default_model.md`)", ""]
    if train_scores:
        lines += [f"{TRAIN_LINE} (ASTRA definition): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(train_scores.items())
                              if isinstance(v, float) and "f1" in k), ""]
    elif kept_train_line:
        lines += [kept_train_line, ""]
    if kept_tail:
        return "\n".join(lines) + "\n" + kept_tail
    lines += [
        LIMITATIONS,
        "",
        "(What this model cannot do, measured by hand: this section and those after it are kept when the card",
        "is regenerated.)",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--eval", type=Path, default=None, help="Markdown table of evaluate_model.py")
    parser.add_argument("--dest", type=Path, default=DEST)
    parser.add_argument("--note", default="", help="a sentence about the training run for the card")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    slim = strip_checkpoint(args.checkpoint, args.dest / "model.ckpt")
    params = args.checkpoint.parent / "preprocess.yaml"
    if not params.is_file():
        print(f"{params}: missing (astro3s-train writes it beside the checkpoints)", file=sys.stderr)
        return 2
    shutil.copyfile(params, args.dest / "preprocess.yaml")
    scores_file = args.checkpoint.parent.parent / "scores.json"
    train_scores = None
    if scores_file.is_file():
        data = json.loads(scores_file.read_text())
        train_scores = {k: v for k, v in (data.get("metrics") or data).items() if isinstance(v, float)}
    eval_table = args.eval.read_text() if args.eval and args.eval.is_file() else None
    from astro3s.io import write_text

    card = args.dest / "MODEL_CARD.md"
    size = (args.dest / "model.ckpt").stat().st_size / 1e6
    write_text(card, model_card(slim, checkpoint=args.checkpoint, eval_table=eval_table, train_scores=train_scores,
                                note=args.note, size_mb=size, previous=card.read_text() if card.is_file() else None))
    print(f"wrote {args.dest} (model.ckpt {size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
