#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: the SAME command runs on every worker; jax.distributed
# discovers the coordinator, process count and process id from the TPU metadata.
#
#   scripts/tpu_pod_launch.sh TPU_NAME ZONE configs/imagenet_nest.py:base gs://BUCKET/nest_base [--config.x=y ...]
#
# The workdir must be shared storage (a GCS bucket) so every host writes the same checkpoint.
set -euo pipefail
TPU_NAME=${1:?TPU name}; ZONE=${2:?zone}; CONFIG=${3:?config}; WORKDIR=${4:?workdir}; shift 4
REPO_URL=${REPO_URL:-https://github.com/YOUR_FORK/nest_jax.git}
EXTRA="$*"

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  [ -d nest_jax ] || git clone $REPO_URL nest_jax
  cd nest_jax && pip install -q -e '.[gcs]' 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  python -m nest_jax.main --config=$CONFIG --workdir=$WORKDIR \
      --config.distributed.enabled=True $EXTRA 2>&1 | tee -a ~/train.log
"
