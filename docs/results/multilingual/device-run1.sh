#!/bin/bash
# Device run (issue 12 item 4): the six-direction Transformer in two batch settings, and the
# bilingual en-fr / fr-en Transformers of the same recipe, side by side on one GPU; then each run's
# last epoch-end checkpoints averaged into an fp16 bundle, the bilinguals' test set translated.
set -o pipefail
PY=${PY:-python3}; OUT=${OUT:-/tmp/out}; WALL=${WALL:-460}; SECS=${SECS:-360}; EXTRA=${EXTRA:-}
if [ "$PY" = python3 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null; date +%T
mkdir -p $OUT/logs runs
cp -r .gpu/prep-ml .gpu/prep-ml2
(sleep 150; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; uptime) &
C=training/configs; T=data/multi30k/test_2016_flickr
run() { # name recipe prepared [--set ...]
  local n=$1 r=$2 p=$3; shift 3
  OMP_NUM_THREADS=3 timeout -s TERM -k 30 $WALL $PY -m nmt train --config $r --set data.prepared=$p \
    --set train.out_dir=runs/gpu-$n --set train.max_seconds=$SECS --set train.eval_batch_size=512 "$@" $EXTRA \
    > $OUT/logs/train-$n.log 2>&1
  echo "$n: train rc=$? $(date +%T)"
  $PY -m nmt average --run runs/gpu-$n --last 5 --out runs/bundle-$n --dtype float16 > $OUT/logs/avg-$n.log 2>&1 \
    || $PY -m nmt average --run runs/gpu-$n --last 3 --any-step --out runs/bundle-$n --dtype float16 >> $OUT/logs/avg-$n.log 2>&1
  echo "$n: average rc=$? $(date +%T)"
  cp runs/gpu-$n/metrics.jsonl $OUT/logs/metrics-$n.jsonl
}
test_set() { # name src tgt [--source --target]
  local n=$1 s=$2 t=$3; shift 3
  $PY -m nmt evaluate --model runs/bundle-$n --device cuda --batch-size 256 --src $T.$s.gz --ref $T.$t.gz \
    --hyp-out $OUT/logs/test-$n-$s$t.hyp --json "$@" > $OUT/logs/test-$n-$s$t.json 2>$OUT/logs/test-$n-$s$t.err
  echo "$n $s->$t: $(cat $OUT/logs/test-$n-$s$t.json)"
}
(run ml8k $C/transformer-en-de-fr.yaml .gpu/prep-ml; test_set ml8k en de --source en --target de) &
(run ml32k $C/transformer-en-de-fr.yaml .gpu/prep-ml2 --set train.batch_tokens=32768 --set train.lr=0.002 \
   --set train.warmup_steps=800; test_set ml32k en de --source en --target de) &
(run en-fr $C/transformer-en-fr.yaml .gpu/prep-en-fr; test_set en-fr en fr) &
(run fr-en $C/transformer-fr-en.yaml .gpu/prep-fr-en; test_set fr-en fr en) &
wait
for n in ml8k ml32k; do
  tar -cf runs/$n.tar -C runs bundle-$n && split -b 15M -d runs/$n.tar $OUT/$n.tar.part
done
cp runs/bundle-en-fr/bundle.json $OUT/logs/bundle-en-fr.json; cp runs/bundle-fr-en/bundle.json $OUT/logs/bundle-fr-en.json
tar -czf $OUT/logs.tgz -C $OUT logs && rm -rf $OUT/logs
ls -la $OUT; date +%T
