#!/usr/bin/env bash
# The accelerator check of fusionnet-keras (issue 14): on a GPU machine it runs in under 10 minutes.
#
#   benchmarks/gpu_check.sh [--quick] [--out DIR]
#
# 1. `fusionnet-keras info`: the backend and the devices it sees;
# 2. prediction at the paper's sizes (FusionNet 64/4, a 512 px section padded to 640 px) in float32 and
#    bfloat16, with the matmul peak of both (benchmarks/precision.py, random weights);
# 3. training steps at the paper's sizes (640 x 640, batch 1, augmentation on/off) in float32 and
#    mixed_bfloat16 (benchmarks/train_throughput.py);
# 4. 200 training steps of PRESET=paper on ISBI 2012 (experiments/isbi2012/fusionnet.toml: 10 epochs of
#    20 steps, validation at the end), printing the loss of every epoch and whether it fell.
#
# Works without TensorFlow (KERAS_BACKEND=jax; the training input then goes through the numpy
# pipeline). KERAS_BACKEND defaults to tensorflow when it is installed, else jax. Needs the ISBI 2012
# data under $FUSIONNET_DATA_DIR (default data/). --quick shrinks every size (FusionNet 8/4, 128 px,
# 10 training steps) to prove the script on a CPU in a few minutes. Results: DIR (results/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
OUT=results/gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ -z "${KERAS_BACKEND:-}" ]; then
  if "$PY" -c "import tensorflow" 2>/dev/null; then export KERAS_BACKEND=tensorflow; else export KERAS_BACKEND=jax; fi
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export FUSIONNET_DATA_DIR=${FUSIONNET_DATA_DIR:-data}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$QUICK" = 1 ]; then
  NF=8; SIZE=128; TSIZE=128; EPOCHS=2; STEPS=5; TSTEPS=2
  SHRINK=(--set model.nb_filters=8 --set train.crop=128)
else
  NF=64; SIZE=512; TSIZE=640; EPOCHS=10; STEPS=20; TSTEPS=5
  SHRINK=()
fi
mkdir -p "$OUT"
echo "== gpu_check: backend $KERAS_BACKEND, quick=$QUICK, results in $OUT =="
start=$(date +%s)

echo "== 1. backend and devices =="
"$PY" -m fusionnet_keras.cli info --size 640 | sed -n '1,5p'

echo "== 2. predict: FusionNet $NF/4, a $SIZE px section, float32 and bfloat16 =="
"$PY" benchmarks/precision.py --weights '' --size "$SIZE" --nb-filters "$NF" --repeats 3 \
  --json-out "$OUT/predict.json" | grep -v '^RESULT'

for precision in float32 mixed_bfloat16; do
  echo "== 3. train: FusionNet $NF/4, $TSIZE px, batch 1, $precision =="
  "$PY" benchmarks/train_throughput.py --batch-sizes 1 --size "$TSIZE" --nb-filters "$NF" --steps "$TSTEPS" \
    --precision "$precision" --json-out "$OUT/train-$precision.json" | grep -v '^RESULT'
done

echo "== 4. $((EPOCHS * STEPS)) training steps of PRESET=paper on ISBI 2012 =="
"$PY" -m fusionnet_keras.cli train experiments/isbi2012/fusionnet.toml --out "$OUT/paper-steps" --overwrite \
  --set train.epochs="$EPOCHS" --set train.steps_per_epoch="$STEPS" --set train.validate_every="$EPOCHS" \
  --set train.tensorboard=false "${SHRINK[@]}"
"$PY" - "$OUT/paper-steps/state.json" <<'EOF'
import json, sys
state = json.load(open(sys.argv[1]))
losses = [h["loss"] for h in state["history"]]
print("loss per epoch:", " ".join(f"{x:.4f}" for x in losses))
print(f"loss fell: {losses[-1] < losses[0]} ({losses[0]:.4f} -> {losses[-1]:.4f}); "
      f"validation V^Rand {state['best_vrand']:.4f}, training {state.get('train_seconds', 0):.0f} s")
EOF
echo "== gpu_check done in $(( $(date +%s) - start )) s =="
