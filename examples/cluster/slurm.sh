#!/bin/bash
# Build an OME-Zarr pyramid on a SLURM cluster in PARTS array tasks:
#
#   slurm.sh [--wait] INPUT OUTPUT PARTS [plan options...]
#
# It plans the build here (creating OUTPUT, which every node must see at the
# same path), submits slurm-part.sh as an array of PARTS tasks, then
# slurm-finalize.sh to run once they have all succeeded, and prints the job ids.
# Logs go to the current directory: ome-pyramid-part-JOBID_TASK.log and
# ome-pyramid-finalize-JOBID.log.
#
# --wait (or SBATCH_WAIT=1): return only when finalize has ended, with its exit
#     status (0: the pyramid is complete).
# OME_PYRAMID: the ome-pyramid binary [default: the one on PATH].
# SBATCH_OPTS: extra sbatch options for both submissions, overriding the
#     #SBATCH lines, e.g. "--partition=batch --cpus-per-task=16 --mem=24G".
#     sbatch's own SBATCH_* variables (SBATCH_PARTITION, ...) work as well.
#
# Example: slurm.sh /data/volume.zarr /data/volume.ome.zarr 64 --method gaussian
set -euo pipefail

wait_opt=()
if [ "${1:-}" = "--wait" ]; then
    wait_opt=(--wait)
    shift
fi
# SBATCH_WAIT is sbatch's own variable: left set, it would also make the array
# submission block, so it is turned into --wait for finalize alone.
if [ -n "${SBATCH_WAIT:-}" ] && [ "${SBATCH_WAIT}" != 0 ]; then
    wait_opt=(--wait)
fi
unset SBATCH_WAIT

if [ $# -lt 3 ]; then
    sed -n '2,19s/^# \{0,1\}//p' "$0" >&2
    exit 2
fi
input=$1 output=$2 parts=$3
shift 3
case $parts in
    '' | *[!0-9]* | 0) echo "slurm.sh: PARTS must be a positive integer, not '$parts'" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
bin=${OME_PYRAMID:-ome-pyramid}
read -r -a opts <<< "${SBATCH_OPTS:-}"   # word-split on purpose

"$bin" plan "$input" "$output" --parts "$parts" "$@"

# --parsable prints "JOBID" or "JOBID;CLUSTER".
array=$(sbatch --parsable ${opts[@]+"${opts[@]}"} --array="0-$((parts - 1))" \
    "$here/slurm-part.sh" "$output")
array=${array%%;*}
echo "parts: array job $array (tasks 0-$((parts - 1)))"

# afterok: finalize starts only if every task succeeded; if one fails, the
# dependency can never be met and --kill-on-invalid-dep cancels finalize
# rather than leaving it pending for ever (and --wait waiting for ever).
# To recover, rerun each failed part with its INDEX (not as --array=INDEX,
# whose one task would be part 0), then finalize; a part only does what is
# missing:  sbatch slurm-part.sh OUTPUT INDEX
#           sbatch --dependency=afterok:JOBID slurm-finalize.sh OUTPUT
if [ ${#wait_opt[@]} -eq 0 ]; then
    final=$(sbatch --parsable ${opts[@]+"${opts[@]}"} \
        --dependency="afterok:$array" --kill-on-invalid-dep=yes \
        "$here/slurm-finalize.sh" "$output")
    echo "finalize: job ${final%%;*}"
    exit 0
fi

# --wait: sbatch prints the id at once, then waits; its status comes last.
final='' status=1
while IFS= read -r line; do
    case $line in
        'status '*) status=${line#status } ;;
        *) final=${line%%;*}; echo "finalize: job $final" ;;
    esac
done < <(
    sbatch --parsable --wait ${opts[@]+"${opts[@]}"} \
        --dependency="afterok:$array" --kill-on-invalid-dep=yes \
        "$here/slurm-finalize.sh" "$output" && echo "status 0" || echo "status $?"
)
# sbatch --wait exits 0 for a job cancelled for its dependency (a part
# failed), so the job's own state decides.
state=''
if [ -n "$final" ]; then
    state=$(scontrol show job "$final" 2> /dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
fi
if [ "$status" -eq 0 ] && [ -n "$state" ] && [ "$state" != COMPLETED ]; then
    status=1
fi
echo "finalize: ${state:-ended}, exit status $status"
exit "$status"
