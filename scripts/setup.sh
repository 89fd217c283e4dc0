#!/usr/bin/env bash
# Install everything the tests and the demo need, idempotently, on a fresh Debian machine:
# system packages (Prometheus, shellcheck, openssl; containerd, runc, iptables, nftables and
# mmdebstrap for the local stack's real node), the Python virtualenv with every
# extra, and the Go-built Kubernetes tools (cached outside the repo, keyed by version).
#
#   scripts/setup.sh            everything
#   SKIP_TOOLS=1 scripts/setup.sh   no Go tool build (e.g. for lint-only runs)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf '[setup] %s\n' "$*" >&2; }

# 1. System packages. Debian's prometheus package would start a system service where an
#    init system runs; the tests start their own Prometheus on loopback instead.
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v openssl >/dev/null || need+=(openssl)
# The real node (rlscale.devstack.node): Debian's containerd and runc run the pods;
# mmdebstrap builds the images' root filesystem; nft checks the host is left clean.
PATH=$PATH:/usr/sbin:/sbin
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v iptables >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if ((${#need[@]})); then
  log "apt-get install ${need[*]}"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold "${need[@]}" >/dev/null
  # Don't leave a system Prometheus holding :9090 (harmless where no init system runs).
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo_ systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  # Likewise a system containerd we just installed (the real node starts its own, on its own socket).
  if [[ " ${need[*]} " == *" containerd "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet containerd 2>/dev/null; then
    $sudo_ systemctl disable --now containerd >/dev/null 2>&1 || true
  fi
fi

# 2. Python: one virtualenv with the runtime, the training extra (torch, pinned) and the
#    dev tools. pip's own cache (~/.cache/pip) keeps the large torch wheels between runs.
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.rlscale-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "pip install -e '.[train,dev]' (first time: torch is a large download)"
  .venv/bin/pip install -q --upgrade pip setuptools wheel
  .venv/bin/pip install -q -e '.[train,dev]'
  echo "$want" > "$stamp"
fi

# 3. Go-built tools: kube-apiserver & co., etcd, kwok, helm, kindcheck, the kubelet, CNI plugins
#    and pause (cached by version).
if [ -z "${SKIP_TOOLS:-}" ]; then
  log "building/locating the Go tools (first build: ~20-30 min on 2 cores; cached afterwards)"
  bin=$(tools/build-tools.sh | tail -n 1)
  log "tools in $bin"
fi
