#!/usr/bin/env bash
# Set everything up and run the main job on an example movie.
# Today: simulate a D1-like movie with ground truth, then pre-process it
# (motion correction, enhancement, activity map, soma candidates, crops).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
out=${1:-example}
astro3s-simulate simulate=d1_like out="$out/movies" seed=0 extras=quiet
astro3s-preprocess input="$out/movies" out="$out/results" extras=quiet
echo
echo "[astro3s] done. Open $out/movies/*/overview.png and $out/results/*/preprocessing.png"
ls -1 "$out"/results/*/
