#!/bin/bash
# Finish a planned build once every part has run; submit it after the array:
#   sbatch --dependency=afterok:ARRAY_JOB_ID --kill-on-invalid-dep=yes slurm-finalize.sh OUTPUT
# finalize exits 1, naming the parts that have not finished, if any has not;
# the output gets its image metadata only when finalize succeeds.
#
# Edit to your cluster: finalize computes the smaller levels, a fraction of
# the work, in the plan's --memory budget.
#SBATCH --job-name=ome-pyramid-finalize
#SBATCH --cpus-per-task=8
#SBATCH --mem=4G
#SBATCH --output=ome-pyramid-finalize-%j.log
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: sbatch slurm-finalize.sh OUTPUT [finalize options...]" >&2
    exit 2
fi

# Extra arguments go to `ome-pyramid finalize` (e.g. --memory 8GiB). Threads: the
# plan's --threads, else the cores this task may use (CPU affinity, cgroup).
exec "${OME_PYRAMID:-ome-pyramid}" finalize "$@"
