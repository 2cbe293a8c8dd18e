#!/bin/bash
# Device run 2 (issue 12 item 4): the six-direction Transformer continued from run 1's averaged
# weights (init_from), 32k-token batches, then its last 3 epoch ends averaged, and the last alone.
set -o pipefail
PY=${PY:-python3}; OUT=${OUT:-/tmp/out}; WALL=${WALL:-210}; SECS=${SECS:-120}; EXTRA=${EXTRA:-}
if [ "$PY" = python3 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null; date +%T
mkdir -p $OUT/logs runs
OMP_NUM_THREADS=8 timeout -s TERM -k 15 $WALL $PY -m nmt train --config training/configs/transformer-en-de-fr.yaml \
  --set data.prepared=.gpu/prep-ft --set tokenizer.model=.gpu/init-ml8k/spm.model --set train.init_from=.gpu/init-ml8k \
  --set train.out_dir=runs/ft --set train.batch_tokens=32768 --set train.lr=0.0015 --set train.warmup_steps=150 \
  --set train.eval_max_sentences=150 --set train.eval_batch_size=512 --set train.save_every_steps=0 \
  --set train.max_seconds=$SECS $EXTRA > $OUT/logs/train-ft.log 2>&1
echo "ft: train rc=$? $(date +%T)"
cp runs/ft/metrics.jsonl $OUT/logs/metrics-ft.jsonl
$PY -m nmt average --run runs/ft --last 3 --out runs/ft-avg3 --dtype float16 > $OUT/logs/avg3.log 2>&1 \
  || $PY -m nmt average --run runs/ft --last 2 --any-step --out runs/ft-avg3 --dtype float16 >> $OUT/logs/avg3.log 2>&1
echo "avg3 rc=$? $(date +%T)"
$PY -m nmt average --run runs/ft --last 1 --any-step --out runs/ft-last1 --dtype float16 > $OUT/logs/last1.log 2>&1
echo "last1 rc=$? $(date +%T)"
for n in ft-avg3 ft-last1; do tar -cf runs/$n.tar -C runs $n && split -b 15M -d runs/$n.tar $OUT/$n.tar.part; done
tar -czf $OUT/logs.tgz -C $OUT logs && rm -rf $OUT/logs
ls -la $OUT; date +%T
