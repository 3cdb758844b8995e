#!/usr/bin/env bash
# Packs what a GPU device machine needs to run the project into .device/ of the checkout (git-ignored
# through .git/info/exclude, sent with the device tool's `carry: [".device"]`): the Deno binary (xz), the
# project's small npm packages, the Vulkan/EGL loader packages a bare machine lacks, this folder's
# gpu-check.sh and check_hf.py, and the PyTorch CUDA peer of ../shared/bench. Run from the project root
# after `npm ci`: `bash tests/device/prepare.sh` (about 30 s, the xz of Deno). Then, on the device:
#   command: "bash .device/gpu-check.sh"  carry: [".device"]  timeout_s: 540
set -euo pipefail
[ -f deno.json ] && [ -d node_modules ] || { echo "run from the project root after npm ci" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
peer=${PEER_CUDA:-../shared/bench/peer_torch_gpt2_cuda.py}
[ -f "$peer" ] || { echo "no $peer (set PEER_CUDA to the PyTorch CUDA peer script)" >&2; exit 2; }
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
lists=$(mktemp -d); rm -rf .device && mkdir -p .device/debs "$lists/partial"
deno_bin=$(find node_modules/@deno node_modules/deno -type f -name deno -perm -u+x 2>/dev/null | head -n 1)
[ -n "$deno_bin" ] || { echo "no Deno binary under node_modules (npm ci first)" >&2; exit 2; }
xz -T2 -6 -c "$deno_bin" >.device/deno.xz
# npm packages without the big ones the device run does not use (Deno itself, Playwright).
tar -cJf .device/node_modules.tar.xz --exclude='node_modules/@deno' --exclude='node_modules/deno' \
  --exclude='node_modules/playwright*' node_modules
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists='"$lists"
apt-get $o update -qq >/dev/null 2>&1
# One package at a time, with the machine's own lists as a fallback, and none may be missing (a run once
# came back without libvulkan1 when all seven were asked for at once).
for p in libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2; do
  (cd .device/debs && { apt-get $o download "$p" >/dev/null 2>&1 || apt-get download "$p" >/dev/null 2>&1; })
  ls .device/debs/"$p"_*.deb >/dev/null 2>&1 || { echo "could not download $p" >&2; exit 1; }
done
cp "$here/gpu-check.sh" "$here/check_hf.py" "$peer" .device/
du -sh .device | cut -f1 | sed 's/^/.device: /'
