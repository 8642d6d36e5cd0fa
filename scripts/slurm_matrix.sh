#!/usr/bin/env bash
# The paper's matrix on a Slurm cluster: one array task per shard, each on its own GPU node, each pushing
# what it trained to the DVC remote; then, on any machine with the remote, `dvc repro --pull` renders the
# one report without training. Not run by CI (no cluster here).
#
# Submit from a clone whose params.yaml (optimizers, seeds) and DVC remote are committed and pushed:
#   sbatch --array=1-4 scripts/slurm_matrix.sh        # 4 shards; --gres and --time as your site wants
#SBATCH --job-name=imbsam-matrix
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=2-00:00:00
#SBATCH --output=imbsam-matrix-%A_%a.log
set -euo pipefail

shard="${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=1-M}/${SLURM_ARRAY_TASK_COUNT:?}"
# DVC locks a workspace: every task trains in its own clone, on the node's local disk.
work="${TMPDIR:-/tmp}/imbsam-${SLURM_ARRAY_JOB_ID}-${SLURM_ARRAY_TASK_ID}"
git clone --quiet "$SLURM_SUBMIT_DIR" "$work"
cd "$work"
# Slurm's gres sets CUDA_VISIBLE_DEVICES: the runs claim among the GPUs it gave this task.
python -m imbsam.matrix --shard "$shard"
dvc push --run-cache
echo "shard $shard pushed; when every task has, run anywhere: dvc repro --pull"
