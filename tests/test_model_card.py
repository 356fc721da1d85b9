"""The bundled model's card is what experiments/package_default_model.py writes, hand-kept parts included."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "astro3s" / "resources" / "models" / "default"
STAGE2_NOTE = "These are the epochs of stage 2, after the 20 of stage 1 (see Training data)."


def test_the_shipped_card_is_regenerated_exactly(experiment_script) -> None:
    # the card can then never drift from the script, the checkpoint or the evaluation table
    import torch

    packager = experiment_script("package_default_model")
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    slim = torch.load(MODEL_DIR / "model.ckpt", map_location="cpu", weights_only=True)
    text = packager.model_card(slim, checkpoint=Path("last.ckpt"),
                               eval_table=(ROOT / "experiments" / "results" / "default_model.md").read_text(),
                               train_scores=None, note=STAGE2_NOTE,
                               size_mb=(MODEL_DIR / "model.ckpt").stat().st_size / 1e6, previous=card)
    assert text == card, ("MODEL_CARD.md differs from what experiments/package_default_model.py writes: "
                          "regenerate it (see that script's docstring) after changing default_model.md or the script")


def test_regenerating_keeps_the_hand_written_sections_and_test_scores(experiment_script) -> None:
    packager = experiment_script("package_default_model")
    slim = {"state_dict": {}, "hyper_parameters": {"net_config": {"name": "unet"}}, "epoch": 0}
    previous = ("# old\n\nTest FOVs of the training run (ASTRA definition): test/astra_f1 0.500\n\n"
                "## Limitations\n\n- measured by hand\n\n## Size and cost\n\n0.2 s\n")
    text = packager.model_card(slim, checkpoint=Path("x.ckpt"), eval_table="| table |", train_scores=None,
                               previous=previous)
    assert text.endswith("## Limitations\n\n- measured by hand\n\n## Size and cost\n\n0.2 s\n")
    assert "test/astra_f1 0.500" in text and "| table |" in text and "# old" not in text
    fresh = packager.model_card(slim, checkpoint=Path("x.ckpt"), eval_table=None,
                                train_scores={"test/astra_f1": 0.7}, previous=previous)
    assert "test/astra_f1 0.700" in fresh and "0.500" not in fresh
    first = packager.model_card(slim, checkpoint=Path("x.ckpt"), eval_table=None, train_scores=None)
    assert first.rstrip().endswith("regenerated.)") and "## Limitations" in first
