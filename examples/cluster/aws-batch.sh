#!/usr/bin/env bash
# A partitioned ome-pyramid build on AWS Batch: the parts as one array job (each child takes
# its part from AWS_BATCH_JOB_ARRAY_INDEX), finalize as a job that depends on the whole array.
#
#   aws-batch.sh INPUT OUTPUT PARTS JOB_QUEUE JOB_DEFINITION
#
# INPUT and OUTPUT are paths on a file system every container mounts at the same place (EFS or
# FSx for Lustre); JOB_DEFINITION runs a container image with `ome-pyramid` on its PATH and
# that mount (see aws-batch-job-definition.json). Needs the AWS CLI, configured.
set -euo pipefail
if [ $# -ne 5 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
input=$1 output=$2 parts=$3 queue=$4 definition=$5
ome=${OME_PYRAMID:-ome-pyramid}

# 1. The plan, here (this host must see OUTPUT at the same path as the containers).
"$ome" plan "$input" "$output" --parts "$parts"

# 2. The parts: one array job of PARTS children, each retried up to twice (a part is
#    idempotent: a retry does only what is missing).
parts_job=$(aws batch submit-job --job-name ome-pyramid-parts --job-queue "$queue" \
  --job-definition "$definition" --array-properties "size=$parts" \
  --retry-strategy attempts=3 \
  --container-overrides "{\"command\": [\"ome-pyramid\", \"part\", \"$output\"]}" \
  --query jobId --output text)
echo "parts: array job $parts_job ($parts children)"

# 3. Finalize once every child has succeeded (a dependency on an array job waits for all).
finalize_job=$(aws batch submit-job --job-name ome-pyramid-finalize --job-queue "$queue" \
  --job-definition "$definition" --depends-on "jobId=$parts_job" \
  --container-overrides "{\"command\": [\"ome-pyramid\", \"finalize\", \"$output\"]}" \
  --query jobId --output text)
echo "finalize: job $finalize_job (after $parts_job)"
