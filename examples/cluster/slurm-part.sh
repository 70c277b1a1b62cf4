#!/bin/bash
# One part of a planned build, as a SLURM array task:
#   ome-pyramid plan INPUT OUTPUT --parts N
#   sbatch --array=0-$((N-1)) slurm-part.sh OUTPUT
# The part index comes from SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN),
# so no INDEX argument is needed. A part is idempotent: a requeue or a
# resubmission only does what is still missing. To rerun one failed part, give
# its INDEX (an --array=5 alone would run part 0):
#   sbatch slurm-part.sh OUTPUT 5
#
# Edit to your cluster: cores and memory per part (ome-pyramid keeps its
# working set near the plan's --memory, default 2GiB; leave headroom above it).
#SBATCH --job-name=ome-pyramid-part
#SBATCH --cpus-per-task=8
#SBATCH --mem=4G
#SBATCH --output=ome-pyramid-part-%A_%a.log
# Add --partition, --time, --account as your site requires.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: sbatch --array=0-N slurm-part.sh OUTPUT [part options...]" >&2
    exit 2
fi

# Extra arguments go to `ome-pyramid part` (e.g. --memory 8GiB). Threads: the
# plan's --threads, else the cores this task may use (CPU affinity, cgroup).
exec "${OME_PYRAMID:-ome-pyramid}" part "$@"
