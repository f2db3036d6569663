#!/usr/bin/env bash
# Record a larger data set and train bagel-world-small on one CUDA GPU, then evaluate it.
#
#   bash examples/train_world_model_gpu.sh            # DATA, WORK, OUT, STEPS, EPISODES override the defaults
#
# The same commands as the CPU recipe in the model card, with --device cuda and bf16: a
# few minutes there are a day of a 2-core CPU. Recording runs on the CPU cores (the real
# simulators render with llvmpipe), one task per process. State lives outside the repo and
# every stage resumes, so the script can be re-run after an interruption. Not yet run on
# a GPU: the first session that has one should run it and report what it printed.
set -euo pipefail
DATA=${DATA:-/tmp/bagel-world/rec}
WORK=${WORK:-/tmp/bagel-world/train}
OUT=${OUT:-/tmp/bagel-world/bagel-world-small}
STEPS=${STEPS:-20000}
EPISODES=${EPISODES:-4096}
export MUJOCO_GL=egl PYOPENGL_PLATFORM=egl
for task in navigate multiview future_frame manipulate; do
    OMP_NUM_THREADS=1 bagel-world record --task "$task" --out "$DATA" --episodes "$EPISODES" --steps 32 \
        --seed 1000 --uniform 0.5 --vary 0.1 --branches 4 &
done
wait
bagel-world train --data "$DATA" --out "$OUT" --work "$WORK" --device cuda --bf16 \
    --init bagel_world/checkpoints/bagel-world-small --steps "$STEPS" --batch-size 64 --lr 3e-4 \
    --timestep-shift 3 --cfg-text 3 --branch-share 0.5 --branch-group 4 --progress-share 0.5
bagel-world eval --checkpoint "$OUT" --device cuda --episodes 16 --seed 0 --out "$OUT-eval"
