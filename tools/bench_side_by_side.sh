#!/bin/bash
# fmhost bench beside the PyTorch reference, alternating runs in one sitting,
# and a Markdown table of medians and ratios, both sides on one kernel set.
#
#   tools/bench_side_by_side.sh [--kernels SET] [ROUNDS] [MODELS...]
#
# SET (or $KERNELS; default: the best this processor runs, as fmhost
# --version reports it) is the kernel set both sides are held to:
#   avx512    fmhost with FMHOST_KERNELS=avx512; PyTorch unrestricted.
#   avx2      fmhost with FMHOST_KERNELS=avx2; PyTorch with
#             ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 (oneDNN's and
#             ATen's AVX2 kernels; check with ONEDNN_VERBOSE=1).
#   portable  fmhost with FMHOST_KERNELS=portable; PyTorch unrestricted (it
#             has no like-for-like mode: the table says so).
#
# Needs build/fmhost, Debian's python3-torch (/usr/bin/python3) and the
# reference script torch_ref.py. ROUNDS defaults to 3, MODELS to
# "mlp cnn rescnn"; THREADS (default "2 1"), PRECISION (fp32 or bf16, default
# fp32: both sides' --precision, bf16 being PyTorch's CPU autocast), FMHOST
# (default build/fmhost) and
# TORCH_REF (default ../shared/anchors/torch_ref.py beside the checkout) may
# be set in the environment. Raw JSON lines are kept in a temporary directory
# whose name is printed at the end.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
kernels="${KERNELS:-}"
case "${1:-}" in
  --kernels) [ $# -ge 2 ] || { echo "bench_side_by_side: --kernels needs a set (portable, avx2 or avx512)" >&2; exit 2; }
             kernels="$2"; shift 2 ;;
  --kernels=*) kernels="${1#--kernels=}"; shift ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
rounds="${1:-3}"
shift || true
models="${*:-mlp cnn rescnn}"
threads="${THREADS:-2 1}"
precision="${PRECISION:-fp32}"
case "$precision" in fp32|bf16) ;; *) echo "bench_side_by_side: PRECISION '$precision' is neither fp32 nor bf16" >&2; exit 2 ;; esac
fmhost="${FMHOST:-$root/build/fmhost}"
torch_ref="${TORCH_REF:-$root/../shared/anchors/torch_ref.py}"
[ -x "$fmhost" ] || { echo "bench_side_by_side: no $fmhost; build first (cmake --workflow --preset default)" >&2; exit 2; }
[ -f "$torch_ref" ] || { echo "bench_side_by_side: no $torch_ref (the PyTorch reference script); set TORCH_REF" >&2; exit 2; }
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "bench_side_by_side: PyTorch missing; apt-get install python3-torch" >&2; exit 2; }
case "$rounds" in ''|*[!0-9]*) echo "bench_side_by_side: ROUNDS '$rounds' is not a number (usage: $0 [--kernels SET] [ROUNDS] [MODELS...])" >&2; exit 2 ;; esac

# fmhost itself checks the set (unknown, or one this processor lacks: exit 2
# with the sets it runs); empty means its default, the best.
kernels="$(FMHOST_KERNELS="$kernels" "$fmhost" --version | sed -n 's/^kernels: \([a-z0-9]*\) .*/\1/p')" || exit 2
torch_env=()
case "$kernels" in
  avx2) torch_env=(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2); torch_note="restricted to AVX2 (${torch_env[*]})" ;;
  avx512) torch_note="unrestricted (its best: AVX-512 on this processor)" ;;
  *) torch_note="unrestricted: PyTorch has no portable mode, so this is not like for like" ;;
esac
echo "kernels: fmhost FMHOST_KERNELS=$kernels; PyTorch $torch_note; precision $precision" >&2

out="$(mktemp -d)"
for round in $(seq 1 "$rounds"); do
  for m in $models; do
    batches=200
    [ "$m" = rescnn ] && batches=40
    for t in $threads; do
      echo "round $round/$rounds: $m, $t thread(s)" >&2
      # Both sides evaluate the first 5000 test images in batches of 1000, as
      # torch_ref.py's evaluate() does (fmhost runs each as passes of 256).
      FMHOST_KERNELS="$kernels" "$fmhost" bench --model "$m" --batches "$batches" --threads "$t" \
        --eval-batch 1000 --precision "$precision" > "$out/fm.$m.$t.$round.json"
      env ${torch_env[@]+"${torch_env[@]}"} /usr/bin/time -f %M -o "$out/torch.$m.$t.$round.rss" \
        /usr/bin/python3 "$torch_ref" bench --model "$m" --batches "$batches" --threads "$t" \
        --precision "$precision" 2>/dev/null | tail -n 1 > "$out/torch.$m.$t.$round.json"
    done
  done
done

/usr/bin/python3 - "$out" "$models" "$threads" "$kernels" "$torch_note" "$precision" <<'PY'
import glob, json, statistics, sys

out, models, threads, kernels, torch_note, precision = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5], sys.argv[6]

def load(pattern):
    return [json.load(open(f)) for f in sorted(glob.glob(pattern))]

print(f"kernels: fmhost {kernels}; PyTorch {torch_note}; precision {precision} on both sides\n")
print(f"| model | threads | fmhost ({kernels}) train img/s | PyTorch | ratio | fmhost ({kernels}) eval img/s "
      "| PyTorch | ratio | fmhost train RSS MB | PyTorch RSS MB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for m in models:
    for t in threads:
        fm, th = load(f"{out}/fm.{m}.{t}.*.json"), load(f"{out}/torch.{m}.{t}.*.json")
        ran = {r.get("kernels") for r in fm}
        if ran != {kernels}:
            sys.exit(f"bench_side_by_side: fmhost ran {sorted(map(str, ran))}, not {kernels}")
        for side, runs in (("fmhost", fm), ("PyTorch", th)):
            if {r.get("precision", "fp32") for r in runs} != {precision}:
                sys.exit(f"bench_side_by_side: {side} did not run in {precision}")
        rss = [int(open(f).read().split()[-1]) / 1024 for f in sorted(glob.glob(f"{out}/torch.{m}.{t}.*.rss"))]
        med = lambda runs, key: statistics.median(r[key] for r in runs)
        ft, tt = med(fm, "train_img_s"), med(th, "train_img_s")
        fe, te = med(fm, "eval_img_s"), med(th, "eval_img_s")
        print(f"| {m} | {t} | {ft:,.0f} | {tt:,.0f} | {ft / tt:.2f}x | {fe:,.0f} | {te:,.0f} | {fe / te:.2f}x "
              f"| {med(fm, 'peak_rss_mb'):,.0f} | {statistics.median(rss):,.0f} |")
print(f"\nmedians of {len(fm)} alternating runs; raw JSON in {out}")
PY
