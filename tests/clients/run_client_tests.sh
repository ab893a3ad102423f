#!/usr/bin/env bash
# Runs one API client suite (clients/python or clients/typescript) against a real `vial serve`:
# private VIAL_HOME (images/ and templates/ symlinked to the real ones), private unix socket and
# a TCP port on loopback with a random token. The suite finds them in VIAL_TEST_SOCKET,
# VIAL_TEST_URL and VIAL_TEST_TOKEN. Afterwards the server gets SIGTERM and must leave no QEMU
# process, socket or run/ file behind.
#
# usage: run_client_tests.sh VIAL_BINARY python|typescript
# exit: the suite's status; 77 (skip) when the python image or the suite's runtime is missing.
set -uo pipefail

vial=${1:?usage: $0 VIAL_BINARY python|typescript}
suite=${2:?usage: $0 VIAL_BINARY python|typescript}
repo=$(cd "$(dirname "$0")/../.." && pwd)

# The home whose images and templates the tests reuse (like tests/integration/cli_harness.cc).
if [[ -n ${VIAL_IMAGES_HOME:-} ]]; then real_home=$VIAL_IMAGES_HOME
elif [[ -n ${VIAL_HOME:-} ]]; then real_home=$VIAL_HOME
elif [[ $(id -u) == 0 ]]; then real_home=/var/lib/vial
else real_home=${XDG_DATA_HOME:-$HOME/.local/share}/vial
fi
if [[ ! -d $real_home/images/python ]]; then
  echo "SKIP: no python image in $real_home/images (build it with: vial image build python)"
  exit 77
fi
case $suite in
  python) command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; } ;;
  typescript) command -v node >/dev/null || { echo "SKIP: node not installed"; exit 77; } ;;
  *) echo "unknown suite '$suite' (python or typescript)" >&2; exit 2 ;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vial-clients-XXXXXX")
home=$tmp/home
mkdir -p "$home" "$real_home/templates"
ln -s "$real_home/images" "$home/images"
ln -s "$real_home/templates" "$home/templates"
[[ -f $real_home/accel.json ]] && cp "$real_home/accel.json" "$home/"  # no KVM probe per run
head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$tmp/token"
chmod 600 "$tmp/token"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sock=$tmp/vial.sock

# The server gets SIGTERM if this script dies, even by SIGKILL (a CTest timeout).
deathsig=()
setpriv --help 2>/dev/null | grep -q pdeathsig && deathsig=(setpriv --pdeathsig TERM)
VIAL_HOME=$home "${deathsig[@]}" "$vial" serve --socket "$sock" --listen "127.0.0.1:$port" --token-file "$tmp/token" \
  --pool python=1 --max-vms 2 --max-file-mib 4 >"$tmp/serve.log" 2>&1 &
server=$!

# QEMU processes started for this home (their command lines name files under it).
our_qemus() {
  local p comm
  for p in /proc/[0-9]*; do
    read -r comm <"$p/comm" 2>/dev/null || continue
    [[ $comm == qemu* ]] || continue
    [[ $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) == *"$home/"* ]] && echo "${p#/proc/}"
  done
}

status=0
fail() { echo "FAIL: $*"; status=1; }

stop_server() {
  if kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    for _ in $(seq 600); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server" 2>/dev/null; then
      fail "vial serve still running 60 s after SIGTERM; killing it"
      kill -KILL "$server"
    fi
  fi
  wait "$server" 2>/dev/null
  local rc=$?
  [[ $rc == 0 ]] || fail "vial serve exited with $rc after SIGTERM"
  [[ ! -e $sock ]] || fail "the socket $sock is still there after shutdown"
  local left
  for _ in $(seq 100); do left=$(our_qemus); [[ -z $left ]] && break; sleep 0.1; done
  if [[ -n $left ]]; then
    fail "QEMU process(es) of $home left after shutdown: $left"
    for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
  fi
  left=$(ls -A "$home/run" 2>/dev/null)
  [[ -z $left ]] || fail "files left in $home/run: $left"
  if [[ $status != 0 ]]; then
    echo "--- vial serve log (last 60 lines) ---"
    tail -n 60 "$tmp/serve.log"
  fi
  rm -rf "$tmp"  # images/ and templates/ are symlinks: removed, never followed
}
trap 'stop_server; exit $status' EXIT
trap 'exit 130' INT TERM

# Wait (bounded) for the server to answer; it may first build a template under TCG.
ready=0
for _ in $(seq 1200); do
  kill -0 "$server" 2>/dev/null || break
  if curl -sf --max-time 5 --unix-socket "$sock" http://vial/healthz >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
if [[ $ready != 1 ]]; then
  fail "vial serve did not answer /healthz within 120 s"
  exit
fi

export VIAL_TEST_SOCKET=$sock VIAL_TEST_URL=http://127.0.0.1:$port VIAL_TEST_TOKEN
VIAL_TEST_TOKEN=$(cat "$tmp/token")
case $suite in
  python) (cd "$repo/clients/python" && python3 -m unittest -v test_vial_client) || status=$? ;;
  typescript) (cd "$repo/clients/typescript" && node --test) || status=$? ;;
esac
exit
