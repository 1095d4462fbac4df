#!/bin/bash
# fmhost bench beside the PyTorch reference, alternating runs in one sitting,
# and a Markdown table of medians and ratios.
#
#   tools/bench_side_by_side.sh [ROUNDS] [MODELS...]
#
# Needs build/fmhost, Debian's python3-torch (/usr/bin/python3) and the
# reference script torch_ref.py. ROUNDS defaults to 3, MODELS to
# "mlp cnn rescnn"; THREADS (default "2 1"), FMHOST (default build/fmhost) and
# TORCH_REF (default ../shared/anchors/torch_ref.py beside the checkout) may
# be set in the environment. Raw JSON lines are kept in a temporary directory
# whose name is printed at the end.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
shift || true
models="${*:-mlp cnn rescnn}"
threads="${THREADS:-2 1}"
fmhost="${FMHOST:-$root/build/fmhost}"
torch_ref="${TORCH_REF:-$root/../shared/anchors/torch_ref.py}"
[ -x "$fmhost" ] || { echo "bench_side_by_side: no $fmhost; build first (cmake --workflow --preset default)" >&2; exit 2; }
[ -f "$torch_ref" ] || { echo "bench_side_by_side: no $torch_ref (the PyTorch reference script); set TORCH_REF" >&2; exit 2; }
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "bench_side_by_side: PyTorch missing; apt-get install python3-torch" >&2; exit 2; }

out="$(mktemp -d)"
for round in $(seq 1 "$rounds"); do
  for m in $models; do
    batches=200
    [ "$m" = rescnn ] && batches=40
    for t in $threads; do
      echo "round $round/$rounds: $m, $t thread(s)" >&2
      "$fmhost" bench --model "$m" --batches "$batches" --threads "$t" > "$out/fm.$m.$t.$round.json"
      /usr/bin/time -f %M -o "$out/torch.$m.$t.$round.rss" \
        /usr/bin/python3 "$torch_ref" bench --model "$m" --batches "$batches" --threads "$t" \
        2>/dev/null | tail -n 1 > "$out/torch.$m.$t.$round.json"
    done
  done
done

/usr/bin/python3 - "$out" "$models" "$threads" <<'PY'
import glob, json, statistics, sys

out, models, threads = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()

def load(pattern):
    return [json.load(open(f)) for f in sorted(glob.glob(pattern))]

print("| model | threads | fmhost train img/s | PyTorch | ratio | fmhost eval img/s | PyTorch | ratio "
      "| fmhost train RSS MB | PyTorch RSS MB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for m in models:
    for t in threads:
        fm, th = load(f"{out}/fm.{m}.{t}.*.json"), load(f"{out}/torch.{m}.{t}.*.json")
        rss = [int(open(f).read().split()[-1]) / 1024 for f in sorted(glob.glob(f"{out}/torch.{m}.{t}.*.rss"))]
        med = lambda runs, key: statistics.median(r[key] for r in runs)
        ft, tt = med(fm, "train_img_s"), med(th, "train_img_s")
        fe, te = med(fm, "eval_img_s"), med(th, "eval_img_s")
        print(f"| {m} | {t} | {ft:,.0f} | {tt:,.0f} | {ft / tt:.2f}x | {fe:,.0f} | {te:,.0f} | {fe / te:.2f}x "
              f"| {med(fm, 'peak_rss_mb'):,.0f} | {statistics.median(rss):,.0f} |")
print(f"\nmedians of {len(fm)} alternating runs; raw JSON in {out}")
PY
