#!/usr/bin/env bash
# Train one recipe end to end: data, model (torchrun across GPUS processes), checkpoint
# average, and scores on test_2016_flickr.
#   training/train.sh training/configs/transformer-en-de.yaml [GPUS]
# Set MULTI30K_URL to fetch the corpus from a copy (file:// works) instead of GitHub.
set -euo pipefail
recipe=${1:?usage: training/train.sh RECIPE [GPUS]}
gpus=${2:-1}
nmt=${NMT:-nmt}

if [ ! -f data/multi30k/train.en.gz ]; then
  $nmt data download multi30k --out data/multi30k ${MULTI30K_URL:+--base-url "$MULTI30K_URL"}
fi

if [ "$gpus" -gt 1 ]; then
  torchrun --standalone --nproc_per_node "$gpus" -m nmt train --config "$recipe" --resume
else
  $nmt train --config "$recipe" --resume
fi

out=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['train']['out_dir'])" "$recipe")
src=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['data']['src_lang'])" "$recipe")
tgt=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['data']['tgt_lang'])" "$recipe")
$nmt average --run "$out" --last 5 --out "$out/averaged"
for bundle in "$out/bundle" "$out/averaged"; do
  echo "== $bundle"
  $nmt evaluate --model "$bundle" --src data/multi30k/test_2016_flickr.$src.gz --ref data/multi30k/test_2016_flickr.$tgt.gz
done
