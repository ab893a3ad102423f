#!/usr/bin/env bash
# Integration test for images/build-image: builds the shell image (the smallest) into a temp
# dir, checks the outputs and manifest, the "up to date" fast path and the agent-only rebuild.
# Usage: tests/integration/images_test.sh [AGENT]   (default build/bin/vial-agent)
# Needs root (mmdebstrap --mode=root) or working unshare, and apt access. Exit 77 = skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
agent=${1:-$here/build/bin/vial-agent}
[ -x "$agent" ] || { echo "skip: no agent at $agent"; exit 77; }
command -v mmdebstrap >/dev/null || { echo "skip: mmdebstrap missing (scripts/install-deps)"; exit 77; }
work=$(mktemp -d /tmp/vial-images-test-XXXXXX)
trap 'rm -rf "$work"' EXIT
# Share the kernel cache with the user's VIAL_HOME if there is one (saves the download).
cache=${VIAL_HOME:-$work}/cache
out=$work/images/shell
B=$here/images/build-image
fail() { echo "FAIL: $*"; exit 1; }

"$B" --help >/dev/null || fail "--help"
set +e; "$B" --lang cobol --out "$out" --agent "$agent" 2>/dev/null; rc=$?; set -e
[ $rc = 2 ] || fail "bad --lang should exit 2, got $rc"

"$B" --lang shell --out "$out" --agent "$agent" --cache "$cache" || fail "build"
for f in vmlinux initramfs.img rootfs.qcow2 manifest.json; do [ -s "$out/$f" ] || fail "missing $f"; done
python3 - "$out" "$agent" <<'PY'
import hashlib, json, os, sys
d, agent = sys.argv[1], sys.argv[2]
m = json.load(open(os.path.join(d, "manifest.json")))
assert m["format"] == 1 and m["language"] == "shell", m
assert m["agent_sha256"] == hashlib.sha256(open(agent, "rb").read()).hexdigest()
assert m["kernel"]["release"].endswith("-cloud-amd64")
for f, info in m["files"].items():
    p = os.path.join(d, f)
    assert os.path.getsize(p) == info["size"], f
    assert hashlib.sha256(open(p, "rb").read()).hexdigest() == info["sha256"], f
assert m["rootfs_virtual_size"] > 256 << 20
assert "bash" in m["packages"] and "coreutils" in m["packages"]
PY
cpio -it <"$out/initramfs.img" 2>/dev/null | sort | tr '\n' ' ' | grep -q 'dev init modules modules/virtio.ko' ||
  fail "initramfs contents"
ls "$work/images" | grep -q 'tmp-' && fail "temp dir left behind"

s=$(date +%s%N)
msg=$("$B" --lang shell --out "$out" --agent "$agent" --cache "$cache" 2>&1)
ms=$((($(date +%s%N) - s) / 1000000))
[ "$msg" = "shell: up to date" ] || fail "second run: $msg"
[ $ms -lt 1000 ] || fail "up-to-date check took $ms ms"

cp "$agent" "$work/agent2"; printf 'x' >>"$work/agent2"
before=$(sha256sum "$out/rootfs.qcow2")
"$B" --lang shell --out "$out" --agent "$work/agent2" --cache "$cache" 2>&1 | grep -q 'initramfs updated' ||
  fail "agent-only rebuild"
[ "$before" = "$(sha256sum "$out/rootfs.qcow2")" ] || fail "rootfs changed on agent-only rebuild"
grep -q "$(sha256sum "$work/agent2" | cut -d' ' -f1)" "$out/manifest.json" || fail "manifest agent_sha256"
echo "PASS images_test"
