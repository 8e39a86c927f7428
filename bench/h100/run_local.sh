#!/bin/bash
# Estimate vs actual on a GPU host: `gpujob run --provider local` on shortened VGG16 and
# ResNet-50 epochs (102,400 synthetic images, batch 256, bf16), writing JSON under $OUT.
# The CLI's pure-Python dependencies come as wheels in .whl/ (the host has torch, no network).
set -u
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null 2>&1
for m in vgg16 resnet50; do
  cat > /tmp/$m-short.yaml <<YAML
name: $m-h100-short
workload: {model: $m, image_size: 224, num_classes: 1000, dataset: synthetic, samples_per_epoch: 102400, epochs: 1, batch_size: 256, precision: bf16}
resources: {accelerators: H100:1}
limits: {max_duration: 20m}
YAML
  PYTHONPATH=/tmp/site:$PWD GPUJOB_HOME=/tmp/gh python3 -m launcher run /tmp/$m-short.yaml --provider local --json \
    > "$OUT/run_$m.jsonl" 2> "$OUT/run_$m.err"
  echo "$m rc=$?"
done
PYTHONPATH=/tmp/site:$PWD GPUJOB_HOME=/tmp/gh python3 -m launcher ls --json > "$OUT/ls.json"
