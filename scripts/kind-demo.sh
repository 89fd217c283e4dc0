#!/usr/bin/env bash
# The rlscale demo on a local kind cluster (needs a running Docker engine).
#
# Usage:
#   scripts/kind-demo.sh [up]     create the cluster, build and load the images, install Prometheus,
#                                 the demo workload, the operator (Helm) and the example policy, run
#                                 the load generator, show the scaling as it happens, print a summary
#   scripts/kind-demo.sh install  only install (or refresh) Prometheus, the demo, the operator, the policy and
#                                 the load generator on the current cluster (no Docker; images must exist)
#   scripts/kind-demo.sh status   one snapshot of the demo
#   scripts/kind-demo.sh summary  the summary again (after or during a run)
#   scripts/kind-demo.sh down     delete the cluster
#
# Environment:
#   CLUSTER_NAME     kind cluster name (default: rlscale-demo)
#   KUBE_CONTEXT     kubeconfig context to use (default: kind-$CLUSTER_NAME)
#   KIND_NODE_IMAGE  node image for `kind create cluster --image` (default: kind's own default)
#   TRACE            a t_seconds,value CSV to replay instead of the generated day
#   HELM             helm binary (default: helm on PATH, else tools/build-tools.sh helm)
#   DEMO_TIMEOUT     seconds to watch the load run (default: 1200)
#   WATCH_EVERY      seconds between snapshots (default: 30)
#   SKIP_BUILD=1     reuse images already built (rlscale/operator:VERSION, rlscale/demo:VERSION)
#
# Requires: docker (with a running engine), kind, kubectl; helm 3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${CLUSTER_NAME:-rlscale-demo}
CONTEXT=${KUBE_CONTEXT:-kind-$CLUSTER}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-1200}
WATCH_EVERY=${WATCH_EVERY:-30}
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/rlscale/Chart.yaml")
OPERATOR_IMAGE=rlscale/operator:$VERSION
DEMO_IMAGE=rlscale/demo:$VERSION
DEMO_NS=rlscale-demo
OPERATOR_NS=rlscale-system

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
	printf 'kind-demo: %s\n' "$*" >&2
	exit 1
}
k() { kubectl --context "$CONTEXT" "$@"; }

need() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null || die "$tool is not installed (needed: docker, kind, kubectl, helm)"
	done
}

find_helm() {
	if [[ -n ${HELM:-} ]]; then
		echo "$HELM"
	elif command -v helm >/dev/null; then
		command -v helm
	elif [[ -x $ROOT/tools/build-tools.sh ]] && command -v go >/dev/null; then
		echo "$("$ROOT/tools/build-tools.sh" helm | tail -n 1)/helm"
	else
		die "helm not found: install helm 3, set HELM, or build it with tools/build-tools.sh helm"
	fi
}

create_cluster() {
	if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
		log "kind cluster $CLUSTER exists; reusing it"
	else
		log "creating kind cluster $CLUSTER"
		local args=(create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 180s)
		[[ -n ${KIND_NODE_IMAGE:-} ]] && args+=(--image "$KIND_NODE_IMAGE")
		kind "${args[@]}"
	fi
}

build_images() {
	if [[ ${SKIP_BUILD:-0} == 1 ]]; then
		log "SKIP_BUILD=1: using the existing $OPERATOR_IMAGE and $DEMO_IMAGE"
	else
		log "building $OPERATOR_IMAGE and $DEMO_IMAGE"
		DOCKER_BUILDKIT=1 docker build -f "$ROOT/deploy/docker/operator.Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT"
		DOCKER_BUILDKIT=1 docker build -f "$ROOT/deploy/docker/demo.Dockerfile" -t "$DEMO_IMAGE" "$ROOT"
	fi
	log "loading the images into the cluster"
	kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$DEMO_IMAGE"
}

install_stack() {
	local helm
	helm=$(find_helm)
	log "installing Prometheus (deploy/prometheus)"
	k apply -f "$ROOT/deploy/prometheus/prometheus.yaml"
	k -n monitoring rollout status deployment/prometheus --timeout=300s

	log "installing the demo workload (deploy/demo/demo.yaml)"
	k apply -f "$ROOT/deploy/demo/demo.yaml"
	k -n "$DEMO_NS" rollout status deployment/demo --timeout=180s

	log "installing the operator with Helm (charts/rlscale, deploy/demo/rlscale-values.yaml)"
	"$helm" upgrade --install rlscale "$ROOT/charts/rlscale" --kube-context "$CONTEXT" \
		--namespace "$OPERATOR_NS" --create-namespace \
		--values "$ROOT/deploy/demo/rlscale-values.yaml" --set image.tag="$VERSION" \
		--wait --timeout 300s

	log "applying the example policy (deploy/examples/autoscalepolicy.yaml)"
	k apply -f "$ROOT/deploy/examples/autoscalepolicy.yaml"
}

start_load() {
	log "starting the load generator"
	k -n "$DEMO_NS" delete job loadgen --ignore-not-found --wait=true
	if [[ -n ${TRACE:-} ]]; then
		[[ -f $TRACE ]] || die "TRACE=$TRACE: no such file"
		k -n "$DEMO_NS" create configmap loadgen-trace --from-file=trace.csv="$TRACE" \
			--dry-run=client -o yaml | k apply -f -
		k apply -f "$ROOT/deploy/demo/loadgen-trace.yaml"
	else
		k apply -f "$ROOT/deploy/demo/loadgen.yaml"
	fi
}

# One line: time, replicas, CPU limit, the policy's printer columns, the offered load.
snapshot() {
	local replicas ready cpu policy load
	replicas=$(k -n "$DEMO_NS" get deployment demo -o jsonpath='{.spec.replicas}')
	ready=$(k -n "$DEMO_NS" get deployment demo -o jsonpath='{.status.readyReplicas}')
	cpu=$(k -n "$DEMO_NS" get deployment demo -o jsonpath='{.spec.template.spec.containers[0].resources.limits.cpu}')
	policy=$(k -n "$DEMO_NS" get autoscalepolicy demo --no-headers 2>/dev/null | tr -s ' ' || true)
	load=$(k -n "$DEMO_NS" logs job/loadgen --tail=1 2>/dev/null | grep -o 'target=[ 0-9.]*/s' | tr -d ' ' || true)
	printf '%s  replicas=%s ready=%s cpu_limit=%s  %s  policy: %s\n' \
		"$(date +%H:%M:%S)" "${replicas:-?}" "${ready:-0}" "${cpu:-?}" "${load:-load=?}" "${policy:-<none>}"
	echo "$replicas $cpu" >>"$STATE"
}

job_done() {
	local cond
	cond=$(k -n "$DEMO_NS" get job loadgen -o jsonpath='{.status.conditions[?(@.status=="True")].type}' 2>/dev/null || true)
	[[ $cond == *Complete* || $cond == *Failed* ]]
}

watch_scaling() {
	log "watching for up to ${DEMO_TIMEOUT}s (every ${WATCH_EVERY}s; Ctrl-C stops watching, not the demo)"
	local start=$SECONDS
	while ((SECONDS - start < DEMO_TIMEOUT)); do
		snapshot
		job_done && break
		sleep "$WATCH_EVERY"
	done
}

promql() {
	k -n monitoring exec deployment/prometheus -- promtool query instant http://localhost:9090 "$1" 2>/dev/null |
		sed -n 's/.*=> \([^ ]*\) @.*/\1/p' | head -n 1
}

summary() {
	log "summary"
	if [[ -s ${STATE:-} ]]; then
		printf 'replicas: first %s, max %s, last %s\n' \
			"$(head -n 1 "$STATE" | cut -d' ' -f1)" \
			"$(cut -d' ' -f1 "$STATE" | sort -n | tail -n 1)" \
			"$(tail -n 1 "$STATE" | cut -d' ' -f1)"
		printf 'cpu limits seen: %s\n' "$(cut -d' ' -f2 "$STATE" | sort -u | tr '\n' ' ')"
	fi
	echo "deployment now:"
	k -n "$DEMO_NS" get deployment demo -o wide
	echo "policy:"
	k -n "$DEMO_NS" get autoscalepolicy demo -o wide || true
	echo "load generator result:"
	k -n "$DEMO_NS" logs job/loadgen --tail=1 2>/dev/null | grep '^{' || echo "(still running or no result yet)"
	echo "over the last 20 minutes (Prometheus):"
	printf '  mean request rate   %s req/s\n' \
		"$(promql "avg_over_time(sum(rate(http_requests_total{namespace=\"$DEMO_NS\"}[1m]))[20m:30s])")"
	printf '  worst p99 latency   %s s\n' \
		"$(promql "max_over_time(histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{namespace=\"$DEMO_NS\"}[1m])))[20m:30s])")"
	printf '  errors (5xx) / all  %s\n' \
		"$(promql "sum(increase(http_requests_total{namespace=\"$DEMO_NS\",code=~\"5..\"}[20m])) / sum(increase(http_requests_total{namespace=\"$DEMO_NS\"}[20m]))")"
	printf '  mean replicas       %s\n' \
		"$(promql "avg_over_time(count(demo_workers{namespace=\"$DEMO_NS\"})[20m:30s])")"
	echo "recent events of the policy:"
	k -n "$DEMO_NS" get events --field-selector involvedObject.kind=AutoscalePolicy --sort-by=.lastTimestamp 2>/dev/null |
		tail -n 10 || true
	echo
	echo "Prometheus UI: kubectl --context $CONTEXT -n monitoring port-forward svc/prometheus 9090"
	echo "Delete everything: scripts/kind-demo.sh down"
}

main() {
	local cmd=${1:-up}
	STATE=$(mktemp)
	trap 'rm -f "$STATE"' EXIT
	case $cmd in
	up)
		need docker kind kubectl
		docker info >/dev/null 2>&1 || die "the Docker engine is not running (kind needs it)"
		create_cluster
		build_images
		install_stack
		start_load
		watch_scaling
		summary
		;;
	status)
		need kubectl
		snapshot
		;;
	summary)
		need kubectl
		summary
		;;
	down)
		need kind
		kind delete cluster --name "$CLUSTER"
		;;
	install)
		need kubectl
		install_stack
		start_load
		snapshot
		;;
	-h | --help | help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
	*) die "unknown command: $cmd (try --help)" ;;
	esac
}

main "$@"
