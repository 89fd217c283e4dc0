#!/usr/bin/env bash
# Build the e2e/demo tool binaries (Kubernetes control plane, etcd, kwok, helm,
# kindcheck; the kubelet and CNI plugins of the real node) from the Go tool modules next
# to this script.
#
# Usage:
#   tools/build-tools.sh [COMPONENT...]     build (default: all) and print the bin dir
#   tools/build-tools.sh --print-dir        print the bin dir for the current key, build nothing
#   tools/build-tools.sh --list             list component names
#   tools/build-tools.sh --bump-k8s 1.33.X  re-pin tools/k8s to another patch (regenerates replaces)
#
# Components: helm kwok etcd kube-apiserver kube-controller-manager kube-scheduler
#             kubectl kindcheck kubelet cni-bridge cni-host-local cni-loopback pause;
#             aliases: k8s (the four kube binaries), node (kubelet, CNI, pause), all.
#             CNI plugins land in bin/cni/<type> (the names containerd looks up).
#
# Output: ${RLSCALE_TOOLS_CACHE:-$HOME/.cache/rlscale/tools}/<key>/bin/, printed as the
# LAST line of stdout (all progress goes to stderr). <key> hashes the Go version, the
# platform, this script's build scheme and every tool module's go.mod/go.sum/*.go, so a
# version bump gets a fresh dir. Each binary also carries its own component key
# (bin/.<name>.key); a binary whose component key is unchanged is copied from an older
# key dir instead of being rebuilt. Binaries are written to a temp name and renamed, and
# the stamp is written after the rename, so an interrupted build never looks complete.
# Idempotent; concurrent runs serialise on a lock in the key dir.
set -euo pipefail

# Bump when the way binaries are built (flags, ldflags logic) changes.
SCHEME=1

TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${RLSCALE_TOOLS_CACHE:-$HOME/.cache/rlscale/tools}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"

ALL_COMPONENTS=(helm kwok etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kindcheck
	kubelet cni-bridge cni-host-local cni-loopback pause)
K8S_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
NODE_COMPONENTS=(kubelet cni-bridge cni-host-local cni-loopback pause)

log() { printf '[build-tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go not found on PATH (Go >= 1.26 needed)"

# module_of COMPONENT -> tool module dir name
module_of() {
	case $1 in
	helm | kwok | etcd | kindcheck | kubelet | pause) echo "$1" ;;
	cni-bridge | cni-host-local | cni-loopback) echo cni ;;
	kube-*) echo k8s ;;
	kubectl) echo k8s ;;
	*) die "unknown component: $1 (try --list)" ;;
	esac
}

# package_of COMPONENT -> Go package to build (relative to its module dir)
package_of() {
	case $1 in
	helm) echo helm.sh/helm/v3/cmd/helm ;;
	kwok) echo sigs.k8s.io/kwok/cmd/kwok ;;
	etcd) echo go.etcd.io/etcd/server/v3 ;;
	kindcheck | pause) echo . ;;
	kube-* | kubectl | kubelet) echo "k8s.io/kubernetes/cmd/$1" ;;
	cni-host-local) echo github.com/containernetworking/plugins/plugins/ipam/host-local ;;
	cni-*) echo "github.com/containernetworking/plugins/plugins/main/${1#cni-}" ;;
	esac
}

# out_of COMPONENT -> its path relative to the bin dir (CNI plugins under cni/, by type)
out_of() {
	case $1 in
	cni-*) echo "cni/${1#cni-}" ;;
	*) echo "$1" ;;
	esac
}

modversion() { (cd "$TOOLS_DIR/$1" && go list -m -f '{{.Version}}' "$2"); }

# ldflags_of COMPONENT -> -ldflags value. Version strings come from the pinned modules,
# so `kube-apiserver --version`, GET /version and `helm version` report real versions
# (Helm's kubeVersion checks and kwokctl parse them).
ldflags_of() {
	local f="-s -w"
	case $1 in
	kube-* | kubectl | kubelet)
		local v date minor p=k8s.io/component-base/version c=k8s.io/client-go/pkg/version m
		m=$(module_of "$1")
		v=$(modversion "$m" k8s.io/kubernetes)
		date=$(cd "$TOOLS_DIR/$m" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
		minor=${v#v1.}
		minor=${minor%%.*}
		local x
		for x in "$p" "$c"; do
			f+=" -X $x.gitVersion=$v -X $x.gitMajor=1 -X $x.gitMinor=$minor"
			f+=" -X $x.gitTreeState=clean -X $x.buildDate=$date -X $x.gitCommit="
		done
		;;
	helm)
		local v kminor
		v=$(modversion helm helm.sh/helm/v3)
		# Offline `helm template`/`lint` assume this Kubernetes version; match the
		# control plane we run (upstream's Makefile would use Helm's client-go line).
		kminor=$(modversion k8s k8s.io/kubernetes)
		kminor=${kminor#v1.}
		kminor=${kminor%%.*}
		f+=" -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.metadata="
		f+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
		local x
		for x in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
			f+=" -X $x.k8sVersionMajor=1 -X $x.k8sVersionMinor=$kminor"
		done
		;;
	esac
	printf '%s' "$f"
}

# Inputs of a module: go.mod, go.sum and its own Go sources.
module_inputs() {
	local dir=$TOOLS_DIR/$1
	(cd "$dir" && find . -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) | LC_ALL=C sort |
		while read -r f; do printf '%s\n' "$f"; sha256sum <"$f"; done)
}

GOVER=$(go env GOVERSION)
PLATFORM=$(go env GOOS)/$(go env GOARCH)

component_key() {
	local m
	m=$(module_of "$1")
	{
		echo "scheme=$SCHEME go=$GOVER platform=$PLATFORM component=$1 module=$m"
		echo "ldflags=$(ldflags_of "$1")"
		module_inputs "$m"
	} | sha256sum | cut -c1-32
}

global_key() {
	{
		echo "scheme=$SCHEME go=$GOVER platform=$PLATFORM"
		local m
		for m in cni etcd helm k8s kindcheck kubelet kwok pause; do
			echo "module=$m"
			module_inputs "$m"
		done
	} | sha256sum | cut -c1-16
}

bump_k8s() {
	local V=${1#v} M m
	[[ $V =~ ^1\.[0-9]+\.[0-9]+$ ]] || die "--bump-k8s wants a version like 1.33.13"
	cd "$TOOLS_DIR/k8s"
	M=$(cd /tmp && go mod download -json "k8s.io/kubernetes@v$V" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
	sed -n 's|^\t\(k8s.io/[a-z-]*\) => ./staging/.*|\1|p' "$M" | while read -r m; do
		go mod edit "-replace=$m=$m@v0.${V#1.}"
	done
	go mod edit "-require=k8s.io/kubernetes@v$V"
	GOFLAGS=-mod=mod go mod tidy
	# The kubelet's module carries the same pin and replaces (its own module keeps its
	# cache key apart from the control plane's).
	cd "$TOOLS_DIR/kubelet"
	sed -n 's|^\t\(k8s.io/[a-z-]*\) => ./staging/.*|\1|p' "$M" | while read -r m; do
		go mod edit "-replace=$m=$m@v0.${V#1.}"
	done
	go mod edit "-require=k8s.io/kubernetes@v$V"
	GOFLAGS=-mod=mod go mod tidy
	log "tools/k8s and tools/kubelet now pin k8s.io/kubernetes v$V; commit their go.mod and go.sum"
}

# ---- argument parsing -------------------------------------------------------------
want=()
print_only=0
while (($#)); do
	case $1 in
	--list) printf '%s\n' "${ALL_COMPONENTS[@]}"; exit 0 ;;
	--print-dir) print_only=1 ;;
	--bump-k8s) shift; bump_k8s "${1:?--bump-k8s needs a version}"; exit 0 ;;
	-h | --help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	all) want+=("${ALL_COMPONENTS[@]}") ;;
	k8s) want+=("${K8S_COMPONENTS[@]}") ;;
	node) want+=("${NODE_COMPONENTS[@]}") ;;
	-*) die "unknown option: $1" ;;
	*) module_of "$1" >/dev/null; want+=("$1") ;;
	esac
	shift
done
((${#want[@]})) || want=("${ALL_COMPONENTS[@]}")

KEY=$(global_key)
KEY_DIR=$CACHE_ROOT/$KEY
BIN=$KEY_DIR/bin
if ((print_only)); then
	echo "$BIN"
	exit 0
fi
mkdir -p "$BIN/cni" "$KEY_DIR/share"

exec 9>"$KEY_DIR/.lock"
flock 9
# Remove half-written binaries of this run if it is interrupted.
trap 'rm -f "$BIN"/.*.tmp.$$ "$BIN"/cni/.*.tmp.$$ "$BIN"/.*.key.tmp' EXIT

# Human-readable record of what this key holds.
{
	echo "key=$KEY scheme=$SCHEME go=$GOVER platform=$PLATFORM"
	echo "kubernetes=$(modversion k8s k8s.io/kubernetes)"
	echo "etcd=$(modversion etcd go.etcd.io/etcd/server/v3)"
	echo "kwok=$(modversion kwok sigs.k8s.io/kwok)"
	echo "helm=$(modversion helm helm.sh/helm/v3)"
	echo "kind(kindcheck)=$(modversion kindcheck sigs.k8s.io/kind)"
	echo "kubelet=$(modversion kubelet k8s.io/kubernetes)"
	echo "cni-plugins=$(modversion cni github.com/containernetworking/plugins)"
} >"$KEY_DIR/versions.txt.tmp"
mv -f "$KEY_DIR/versions.txt.tmp" "$KEY_DIR/versions.txt"

build_one() {
	local name=$1 ckey m pkg stamp=$BIN/.$1.key tmp src out old
	out=$(out_of "$name")
	ckey=$(component_key "$name")
	if [[ -x $BIN/$out && -f $stamp && $(<"$stamp") == "$ckey" ]]; then
		log "$name: up to date"
		return
	fi
	tmp=$BIN/$(dirname "$out")/.$name.tmp.$$
	# Reuse an identical binary from another key dir (e.g. after bumping only helm).
	for src in "$CACHE_ROOT"/*/bin/."$name".key; do
		old=${src%/.*}/$out
		[[ -f $src && $(<"$src") == "$ckey" && -x $old && ${src%/*} != "$BIN" ]] || continue
		log "$name: reusing $old"
		# Hard link when possible (binaries are only ever replaced by rename, never edited).
		ln -f "$old" "$tmp" 2>/dev/null || cp -f "$old" "$tmp"
		mv -f "$tmp" "$BIN/$out"
		printf '%s\n' "$ckey" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
		return
	done
	m=$(module_of "$name")
	pkg=$(package_of "$name")
	log "$name: building $pkg (module tools/$m) ..."
	local t0=$SECONDS
	(cd "$TOOLS_DIR/$m" && go build -trimpath -pgo=off -ldflags "$(ldflags_of "$name")" -o "$tmp" "$pkg")
	mv -f "$tmp" "$BIN/$out"
	printf '%s\n' "$ckey" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
	log "$name: built in $((SECONDS - t0))s"
	printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$name" "$((SECONDS - t0))" >>"$KEY_DIR/build-times.log"
}

# kwok's stage configs (Node/Pod lifecycles) ship in its module, not in the binary's
# flags; keep the ones the launcher uses next to the binaries.
install_kwok_stages() {
	local dir out=$KEY_DIR/share/kwok-stages.yaml f first=1
	dir=$(cd "$TOOLS_DIR/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
	[[ -n $dir && -d $dir/kustomize/stage ]] || (cd "$TOOLS_DIR/kwok" && go mod download sigs.k8s.io/kwok)
	dir=$(cd "$TOOLS_DIR/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
	rm -rf "$KEY_DIR/share/kwok-stage.tmp"
	cp -r "$dir/kustomize/stage" "$KEY_DIR/share/kwok-stage.tmp"
	chmod -R u+w "$KEY_DIR/share/kwok-stage.tmp"
	rm -rf "$KEY_DIR/share/kwok-stage"
	mv "$KEY_DIR/share/kwok-stage.tmp" "$KEY_DIR/share/kwok-stage"
	: >"$out.tmp"
	for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
		pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
		((first)) || echo '---' >>"$out.tmp"
		first=0
		cat "$KEY_DIR/share/kwok-stage/$f" >>"$out.tmp"
	done
	mv -f "$out.tmp" "$out"
}

declare -A seen=()
for c in "${want[@]}"; do
	[[ -n ${seen[$c]:-} ]] && continue
	seen[$c]=1
	build_one "$c"
	[[ $c == kwok ]] && install_kwok_stages
done

log "bin dir: $BIN"
echo "$BIN"
