#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md (sections 6 and 7) in one prepared run, for a session lent a GPU (issue 5).
#
#   on the GPU machine, from the repository root (its python3 already has torch and torchvision),
#   through the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".carry"], timeout_s=600)
#     first call:  the floor (~2 min) and SimCLR at the gpu budget, cut after TRAIN_SECONDS (default 420)
#     next call (machine still warm, within 30 s): SKIP_FLOOR=1 bash benchmarks/gpu_check.sh resumes it
#     BYOL: METHODS=byol SKIP_FLOOR=1 ...  (device time is 15 min per task: plan the calls)
#   dry run here on CPU (a minute; checks the script, measures nothing useful):
#     DEVICE=cpu BUDGET=smoke METHODS="simclr_v1 instdisc" OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
#
# Data: CIFAR-10 from $SSL_DATA_DIR (default .carry/, an ignored folder named in `carry`, holding
# cifar10/cifar10_jpeg.npz copied from ../shared/data: 55 MiB, under the 64 MiB that travel).
# Work goes to RUN_DIR (default runs/gpu_check: kept on a warm machine between calls, so a cut run
# resumes from RUN_DIR/METHOD/checkpoint.pt). What comes back, in $OUT: time_to_accuracy.txt and
# results.tar.gz (logs, throughput_floor.json, each METHOD/history.json; no checkpoints).
set -u -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export SSL_DATA_DIR=${SSL_DATA_DIR:-$PWD/.carry} SSL_CACHE_DIR=${SSL_CACHE_DIR:-/tmp/ssl-cache}
OUT=${OUT:-runs/gpu_check_out}
RUN_DIR=${RUN_DIR:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-gpu}
DATASET=${DATASET:-cifar10}
METHODS=${METHODS:-simclr_v1}
FLOOR_METHODS=${FLOOR_METHODS:-simclr_v1 moco_v2 byol}
TRAIN_SECONDS=${TRAIN_SECONDS:-420}         # per call; the 200-epoch targets are SimCLR <= 10 min, BYOL <= 12 min
SKIP_FLOOR=${SKIP_FLOOR:-0}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" "$RUN_DIR"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi";
  $PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$RUN_DIR/machine.txt"

# 1. Floor: bare forward+backward, each method's own backbone passes, and fit's training img/s.
FLOOR_OPTIONS="--device $DEVICE"
[ "$DEVICE" = cpu ] && FLOOR_OPTIONS="$FLOOR_OPTIONS --steps 2 --warmup-steps 1 --batch-size 32"
if [ "$SKIP_FLOOR" != 1 ]; then
    $PYTHON benchmarks/throughput_floor.py $FLOOR_METHODS $FLOOR_OPTIONS --output "$RUN_DIR/floor" 2>&1 | tee "$RUN_DIR/floor.log"
    [ "$DEVICE" = cuda ] && $PYTHON benchmarks/throughput_floor.py simclr_v1 $FLOOR_OPTIONS --compile \
        --output "$RUN_DIR/floor_compiled" 2>&1 | tee -a "$RUN_DIR/floor.log"
    # one optimiser step: fused SGD/AdamW and _foreach LARS against their per-tensor versions (seconds)
    $PYTHON benchmarks/optimizer_step.py --device "$DEVICE" --backbones resnet18 2>&1 | tee "$RUN_DIR/optimizer_step.log"
fi

# 2. Time to accuracy at the gpu budget (kNN k=200 on the 10,000 test images every 10 epochs).
SMOKE_OPTIONS=""
[ "$BUDGET" = smoke ] && SMOKE_OPTIONS="--train-samples 512 --epochs 2"
for method in $METHODS; do
    resume=""
    [ -f "$RUN_DIR/$method/checkpoint.pt" ] && resume="--resume"
    timeout "$TRAIN_SECONDS" $PYTHON -m ssl_minimal train "$method" --dataset "$DATASET" --budget "$BUDGET" \
        --device "$DEVICE" --output "$RUN_DIR/$method" --no-progress $resume $SMOKE_OPTIONS 2>&1 | tee -a "$RUN_DIR/$method.log"
done

$PYTHON - "$RUN_DIR" $METHODS <<'EOF' | tee "$RUN_DIR/time_to_accuracy.txt"
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from train_methods import time_to_published
from ssl_minimal.training import History, load_checkpoint
out = Path(sys.argv[1])
for method in sys.argv[2:]:
    path, checkpoint = out / method / "history.json", out / method / "checkpoint.pt"
    if path.is_file():
        history = History(**json.loads(path.read_text()))
    elif checkpoint.is_file():          # cut by TRAIN_SECONDS: the history up to the last checkpoint
        history = History(**load_checkpoint(checkpoint)["history"])
        print(f"{method}: run cut before its end (rerun this script to resume it); up to its last checkpoint:")
    else:
        print(f"{method}: no history.json or checkpoint.pt")
        continue
    published = time_to_published(method, history)
    reached = published.get("minutes_to_lightly_knn")
    print(f"{method}: {history.step[-1]} steps, {history.step_seconds[-1] / 60:.1f} training min "
          f"({history.wall_seconds / 60:.1f} min with monitors); kNN by epoch "
          + ", ".join(f"{e:.0f}: {a:.1%}" for e, a in zip(history.knn_epoch, history.knn_accuracy))
          + (f"; lightly's {published['lightly_published_knn']:.1%} ({published['lightly_published_minutes']} min): "
             + (f"reached after {reached:.1f} training min" if reached is not None else "not reached")
             if published else ""))
EOF

cp "$RUN_DIR/time_to_accuracy.txt" "$OUT/"
(cd "$RUN_DIR" && find . -name "*.log" -o -name "*.txt" -o -name "*.json" | tar -czf - -T -) > "$OUT/results.tar.gz"
