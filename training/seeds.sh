#!/usr/bin/env bash
# The architecture comparison of docs/seeds.md: plain RNN, GRU and LSTM encoder-decoders, each
# without and with attention, and the Transformer, on Multi30k En->De, trained side by side with
# the same budget of training seconds each (validation not counted), then scored on test_2016_flickr.
#
#   training/seeds.sh OUT [BUDGET_SECONDS] [DEVICE]
#
# Every run starts from its shipped recipe (training/configs/), the cell swapped with --set where
# the recipe names another, and the shipped bundles' SentencePiece model, so all seven share one
# vocabulary. Writes OUT/<run>/ (the training run: metrics.jsonl, checkpoints, log), OUT/<run>/best
# (the best-on-val checkpoint as a float16 bundle), OUT/<run>/test.json and test.hyp (test scores
# and translations, beam 5), OUT/compare-cpu and OUT/compare-gpu (`nmt compare`: CIs, paired
# significance, sentences/s), OUT/env.txt. DEVICE is cuda (default) or cpu. THREADS: CPU threads
# per trainer (default 2); GRACE: wall seconds a trainer may take beyond its budget (default 240);
# ONLY: the names of the runs to train (default all seven).
set -uo pipefail
out=${1:?usage: training/seeds.sh OUT [BUDGET_SECONDS] [DEVICE]}
budget=${2:-200}
device=${3:-cuda}
nmt=${NMT:-nmt}
data=${DATA:-data/multi30k}
C=training/configs
# how long a trainer may take beyond its budget (start-up, validation) before SIGTERM stops it
grace=${GRACE:-240}
mkdir -p "$out"

# name, recipe, overrides
runs=(
  "rnn-en-de $C/lstm-en-de.yaml model.cell=rnn"
  "gru-en-de $C/lstm-en-de.yaml model.cell=gru"
  "lstm-en-de $C/lstm-en-de.yaml"
  "rnn-attention-en-de $C/lstm-attention-en-de.yaml model.cell=rnn"
  "gru-attention-en-de $C/gru-attention-en-de.yaml"
  "lstm-attention-en-de $C/lstm-attention-en-de.yaml"
  "transformer-en-de $C/transformer-en-de.yaml"
)

{
  date -u
  "$nmt" --version 2>/dev/null || true
  python3 -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  nproc
} >"$out/env.txt" 2>&1

# The recurrent recipes ask for bf16 autocast on CUDA; where cuDNN's recurrent kernels refuse
# bfloat16, they train in float32 instead (env.txt says which).
rnn_amp=()
if [ "$device" = cuda ]; then
  if ! python3 - >>"$out/env.txt" 2>&1 <<'EOF'; then
import torch
for kind in (torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM):
    net = kind(8, 8, batch_first=True, bidirectional=True).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = net(torch.randn(2, 3, 8, device="cuda"))
    out.float().sum().backward()
print("recurrent cells: bf16 autocast works")
EOF
    echo "recurrent cells: bf16 autocast failed; they train in float32" >>"$out/env.txt"
    rnn_amp=(--set train.amp=none)
  fi
fi

if [ -n "${ONLY:-}" ]; then  # a subset, e.g. ONLY="gru-attention-en-de transformer-en-de"
  chosen=()
  for spec in "${runs[@]}"; do [[ " $ONLY " == *" ${spec%% *} "* ]] && chosen+=("$spec"); done
  runs=("${chosen[@]}")
fi

pids=()
for spec in "${runs[@]}"; do
  read -r name recipe overrides <<<"$spec"
  mkdir -p "$out/$name"
  cp models/transformer-en-de/spm.model "$out/$name/spm.model"
  sets=(--set "name=$name" --set "train.out_dir=$out/$name" --set "train.device=$device"
    --set "train.max_seconds=$budget" --set train.max_epochs=1000 --set train.eval_batch_size=256
    --set "data.train={src: $data/train.en.gz, tgt: $data/train.de.gz}"
    --set "data.valid={src: $data/val.en.gz, tgt: $data/val.de.gz}")
  [ -n "$overrides" ] && sets+=(--set "$overrides")
  [ "$name" != transformer-en-de ] && sets+=("${rnn_amp[@]}")
  OMP_NUM_THREADS=${THREADS:-2} timeout -s TERM $((budget + grace)) \
    "$nmt" train --config "$recipe" "${sets[@]}" >"$out/$name/train.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  echo "${runs[$i]%% *}: trainer exit $?" >>"$out/env.txt"
done

bundles=()
for spec in "${runs[@]}"; do
  name=${spec%% *}
  # the best on val; a run stopped by SIGTERM before its first validation has only its last step
  best=$(ls "$out/$name/checkpoints/best.pt" 2>/dev/null || ls "$out/$name"/checkpoints/step-*.pt 2>/dev/null | tail -1)
  if [ -n "$best" ]; then
    "$nmt" average --checkpoints "$best" --out "$out/$name/best" --dtype float16 \
      >>"$out/$name/train.log" 2>&1 && bundles+=("$out/$name/best")
  fi
done

# test scores and translations on the training device, all models at once
for bundle in "${bundles[@]}"; do
  run=$(dirname "$bundle")
  OMP_NUM_THREADS=2 "$nmt" evaluate --model "$bundle" --device "$device" --batch-size 128 \
    --src "$data/test_2016_flickr.en.gz" --ref "$data/test_2016_flickr.de.gz" \
    --json --hyp-out "$run/test.hyp" >"$run/test.json" 2>>"$run/train.log" &
done
wait
# decoding speed: on 2 CPU threads (as on the project's CI box) and, with a GPU, on it
OMP_NUM_THREADS=2 "$nmt" compare --models "${bundles[@]}" --device cpu \
  --src "$data/test_2016_flickr.en.gz" --ref "$data/test_2016_flickr.de.gz" \
  --out "$out/compare-cpu" >"$out/compare-cpu.log" 2>&1 &
cpu=$!
if [ "$device" = cuda ]; then
  OMP_NUM_THREADS=2 "$nmt" compare --models "${bundles[@]}" --device cuda --batch-size 128 \
    --src "$data/test_2016_flickr.en.gz" --ref "$data/test_2016_flickr.de.gz" \
    --out "$out/compare-gpu" >"$out/compare-gpu.log" 2>&1
fi
wait $cpu
echo "done" >>"$out/env.txt"
