#!/usr/bin/env bash
# Set everything up and run the main job on an example movie:
# simulate a D1-like movie (with ground truth), run the whole method on it with the
# bundled default model (astro3s-infer: pre-processing, network, combination into cells,
# cross-correlation domains), then score the cells found against the ground truth.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
out=${1:-example}
astro3s-simulate simulate=d1_like out="$out/movies" seed=0 extras=quiet
astro3s-infer input="$out/movies" out="$out/results" nwb=true extras=quiet
name=$(basename "$(ls -d "$out"/movies/*/ | head -n 1)")
# the simulator knows the truth: ASTRA scores of the cells found
astro3s-eval pred="$out/results" gt="$out/movies" out="$out/results/scores.json" extras=quiet
echo
echo "[astro3s] done. Open $out/results/$name/overlay.png (cells and their domains) and traces.png;"
echo "          tables: $out/results/$name/summary.json, traces.csv, events.csv; NWB: $out/results/$name/$name.nwb;"
echo "          all movies: $out/results/index.csv (index.html)"
ls -1 "$out/results/$name/"
