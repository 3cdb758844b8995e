#!/usr/bin/env bash
# Runs on a GPU device machine from the project root, after tests/device/prepare.sh packed .device/:
#   device run  command: "bash .device/gpu-check.sh"  carry: [".device"]  timeout_s: 540
# 1. the WebGPU adapter Deno gets (Vulkan on the NVIDIA driver): backend, adapter info, kernel family,
#    features and limits;
# 2. the engine tests (tests/run.ts's list: every kernel test, the model tests) on that adapter, in the
#    GPU kernel family it picks there;
# 3. `deno task bench` with the GPT-2 124M step at B=16 x T=512, matmul and attention tuned on first use (cache
#    back in $OUT/tune.json; every tiled and attention candidate has a row in the table), and the same step in
#    PyTorch on the same GPU in f32 and under bf16 autocast for the ratio;
# 4. a checkpoint written by the project, loaded with transformers, log-probabilities compared;
# 5. the bench again with --precision f16 --half-sums (the 124M step in mixed precision, then its twin with
#    f16 arithmetic in the linear layers, and their ratio; the f16 matmul rows are in 3).
# Everything also goes to $OUT (log.txt, bench.json, bench_f16.json, tune.json, peer.jsonl). Each part has
# its own limit.
set -uo pipefail
T=$(mktemp -d); OUT=${OUT:-$T/out}; mkdir -p "$OUT"; exec > >(tee "$OUT/log.txt") 2>&1
for f in .device/debs/*.deb; do dpkg -x "$f" /; done; ldconfig
icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/*.json /usr/share/vulkan/icd.d/nvidia*.json 2>/dev/null | head -n 1)
[ -n "$icd" ] && export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"
export DENO_WEBGPU_BACKEND=${DENO_WEBGPU_BACKEND:-vulkan} DENO_NO_UPDATE_CHECK=1
mkdir -p "$T/bin" && xz -dc .device/deno.xz >"$T/bin/deno" && chmod +x "$T/bin/deno"
export PATH=$T/bin:$PATH
[ -d node_modules ] || tar -xJf .device/node_modules.tar.xz
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== 1. adapter"
timeout 60 deno eval 'import { Gpu } from "./shaders/gpu.ts";
const gpu = await Gpu.create();
console.log(JSON.stringify({ ...gpu.describe(), limits: gpu.limits }));' || { echo "no WebGPU adapter: stopping"; exit 1; }

echo "== 2. engine tests on the GPU"
tests=$(deno eval 'import { engineTests } from "./tests/run.ts"; console.log((await engineTests("tests")).join(" "))')
timeout 240 deno test -A --no-check=remote $tests 2>&1 | grep -E '^(ok|FAILED)|passed|failed|error' | tail -n 40

echo "== 3. bench (124M step at 16 x 512), matmul and attention tuned on first use"
timeout 220 deno task bench --big-batch 16 --big-seq 512 --steps 3 --json "$OUT/bench.json" \
  --tune auto --tune-cache "$OUT/tune.json" 2>&1 | tail -n 60
for dt in f32 bf16; do
  timeout 60 python3 .device/peer_torch_gpt2_cuda.py 12 768 12 512 16 50257 5 "$dt" 2>&1 | tee -a "$OUT/peer.jsonl"
done

echo "== 4. transformers loads a checkpoint written here"
timeout 120 deno task train --out "$T/hfrun" --rounds 1 --tune-cache "$OUT/tune.json" >"$T/hfrun.log" 2>&1 ||
  tail -n 5 "$T/hfrun.log"
ck=$(ls -d "$T"/hfrun/checkpoints/*/ 2>/dev/null | tail -n 1)
printf '%s\n' '{"text": "the little dog runs to the park."}' '{"text": "where did you put the red ball?"}' >"$T/hf_in.jsonl"
timeout 60 deno task score --model "$ck" --input "$T/hf_in.jsonl" --output "$T/hf_score.jsonl" \
  --tune-cache "$OUT/tune.json" >/dev/null 2>&1
timeout 60 python3 .device/check_hf.py "$ck" "$T/hf_in.jsonl" "$T/hf_score.jsonl"

echo "== 5. bench in mixed precision (124M step at 16 x 512, --precision f16, and --half-sums' twin)"
# Only the steps and the memory report: part 3 already timed every f16 and f16-arithmetic kernel row.
timeout 150 deno task bench --only train,memory --precision f16 --half-sums --big-batch 16 --big-seq 512 --steps 3 \
  --json "$OUT/bench_f16.json" --tune auto --tune-cache "$OUT/tune.json" 2>&1 | grep -E "train step|GPU memory|f16" |
  tail -n 20
