#!/usr/bin/env bash
# Several services in one capacity budget (docs/budget.md): `rlscale evaluate-budget` on pairs and triples
# of the public traces, their test windows time-shifted so the peaks overlap, the budget a share of what
# the tuned HPAs hold together at the peak without one, 3 seeds. JSON and PNGs go to runs/budget/;
# a summary line per run goes to stdout. About 10 minutes on 2 cores. COORDINATED_MODEL=FILE: the coordinated
# agents' model (default: the shipped one); FRACTIONS, SEEDS override the defaults.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rlscale=$root/.venv/bin/rlscale
out=${1:-$root/runs/budget}
mkdir -p "$out"
nasa=nasa_http_1995-07-09_7d_1min.csv
wc98=worldcup98_1998-06-24_7d_1min.csv
ali=alibaba2018_cluster_cpu_day3-8_1min.csv
azs=azure_functions_2019_sample1350fn_1d_1min.csv
az1=azure_functions_2019_single_fn_1d_1min.csv
combos=(
  "nasa-wc98:$nasa $wc98"
  "nasa-alibaba:$nasa $ali"
  "wc98-alibaba:$wc98 $ali"
  "azure-pair:$azs $az1"
  "nasa-wc98-alibaba:$nasa $wc98 $ali"
  "nasa-alibaba-azure:$nasa $ali $azs"
)
coordinated=()
if [[ -n ${COORDINATED_MODEL:-} ]]; then coordinated=(--coordinated-model "$COORDINATED_MODEL"); fi
for fraction in ${FRACTIONS:-0.5 0.6}; do
  for combo in "${combos[@]}"; do
    name=${combo%%:*}
    args=()
    for trace in ${combo#*:}; do args+=(--trace "$trace"); done
    "$rlscale" evaluate-budget "${args[@]}" "${coordinated[@]}" --budget-fraction "$fraction" --seeds "${SEEDS:-3}" --json \
      --plot "$out/$name-$fraction.png" > "$out/$name-$fraction.json"
    python3 - "$out/$name-$fraction.json" "$name" "$fraction" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["policies"]
print(f"{sys.argv[2]:<20} x{sys.argv[3]:<5} budget {r['budget_cores']:>5} of peak {r['peak_demand_cores']:.1f}: "
      + "  ".join(f"{k} {v['slo_violation_minutes_total']:.1f} min ("
                  + ("-" if v['slo_violation_ratio_vs_hpa'] is None else f"{v['slo_violation_ratio_vs_hpa']:.2f}x")
                  + f", Jain {v['jain_index']:.3f})" for k, v in p.items()))
PY
  done
done
