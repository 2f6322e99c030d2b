#!/usr/bin/env bash
# The benchmarks to run on a GPU machine, in one go, in under 8 minutes; every result
# goes into one folder, next to a device.json that names the device
# (jax.devices()[0].device_kind) and a manifest.json with each step's command, exit
# status and wall time.
#
#   bash benchmarks/gpu.sh --dry-run          # print the plan; check scripts and --help; compute nothing
#   bash benchmarks/gpu.sh                    # -> benchmarks/results/gpu_<UTC date>/
#   bash benchmarks/gpu.sh --out DIR
#
# It installs nothing. On the GPU machine, once, from the repository root:
#   pip install ".[cuda]"
#
# Steps (each under `timeout`; a step that fails or times out is recorded and the next runs):
#   device       what JAX sees                                   -> device.json
#   run          benchmarks/run.py --quick (all sections)        -> run_quick.json
#   bncde        benchmarks/bncde.py, 1 epoch on 1000 patients   -> bncde.json
#   latent_sde   benchmarks/latent_sde.py solver + train timing  -> latent_sde.json
#   scaling      benchmarks/scaling.py --quick --devices real    -> scaling_quick.json (if the script exists)
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python}"
DRY=0
OUT="benchmarks/results/gpu_$(date -u +%Y%m%dT%H%M%SZ)"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) shift; OUT="${1:?--out needs a folder}" ;;
    --out=*) OUT="${1#--out=}" ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown option '$1' (use --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

# Each JAX process allocates what it needs: run.py's parent process and its section
# subprocesses share the GPU, and by default the first would take 75% of its memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export MPLBACKEND=Agg

# name | timeout (s) | script | arguments. The timeouts add up to 470 s.
STEPS=(
  "device|20|-|"
  "run|280|benchmarks/run.py|--quick --timeout 120 --out $OUT/run_quick.json"
  "bncde|70|benchmarks/bncde.py|--n-train 1000 --n-test 200 --epochs 1 --draws 20 --timing-steps 5 --models BNCDE --note gpu.sh --out $OUT/bncde.json"
  "latent_sde|50|benchmarks/latent_sde.py|--parts solver,train --timing-iters 3 --out $OUT/latent_sde.json"
  "scaling|50|benchmarks/scaling.py|--quick --devices real --note gpu.sh --out $OUT/scaling_quick.json"
)

PROBE='import json, sys, jax
d = jax.devices()
json.dump({"device_kind": d[0].device_kind, "platform": d[0].platform, "device_count": len(d),
           "devices": [str(x) for x in d], "jax": jax.__version__}, open(sys.argv[1], "w"), indent=1)
print("device:", d[0].platform, d[0].device_kind, "x", len(d))'

echo "install on the GPU machine (once): pip install \".[cuda]\""
echo "results folder: $OUT"

if [ "$DRY" = 1 ]; then
  bad=0
  for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit script args <<< "$step"
    if [ "$script" = "-" ]; then
      echo "[dry-run] $name (timeout ${limit}s): $PY -c <probe> $OUT/device.json"
      continue
    fi
    echo "[dry-run] $name (timeout ${limit}s): $PY $script $args"
    if [ ! -f "$script" ]; then
      if [ "$name" = "scaling" ]; then
        echo "[dry-run]   $script is missing: this step would be skipped"
        continue
      fi
      echo "[dry-run]   MISSING: $script" >&2; bad=1; continue
    fi
    if help="$("$PY" "$script" --help 2>&1)"; then
      echo "[dry-run]   $script --help: ok"
      # Every option this plan passes must be one the script offers.
      for opt in $args; do
        case "$opt" in
          --*) if ! grep -q -- "${opt%%=*}\b" <<< "$help"; then
                 echo "[dry-run]   $script has no option $opt" >&2; bad=1
               fi ;;
        esac
      done
    else
      echo "[dry-run]   $script --help FAILED" >&2; bad=1
    fi
  done
  exit "$bad"
fi

mkdir -p "$OUT"
: > "$OUT/steps.tsv"
for step in "${STEPS[@]}"; do
  IFS='|' read -r name limit script args <<< "$step"
  if [ "$script" != "-" ] && [ ! -f "$script" ]; then
    echo "[gpu.sh] $name: $script not found, skipped"
    printf '%s\t%s\t%s\t%s\n' "$name" "skipped" "0" "$script missing" >> "$OUT/steps.tsv"
    continue
  fi
  echo "[gpu.sh] $name (at most ${limit}s) ..."
  t0=$(date +%s)
  if [ "$script" = "-" ]; then
    cmd="$PY -c <probe> $OUT/device.json"
    timeout "$limit" "$PY" -c "$PROBE" "$OUT/device.json" > "$OUT/$name.log" 2>&1
  else
    cmd="$PY $script $args"
    # shellcheck disable=SC2086  # the arguments are words
    timeout "$limit" "$PY" "$script" $args > "$OUT/$name.log" 2>&1
  fi
  rc=$?
  t1=$(date +%s)
  echo "[gpu.sh] $name: exit $rc after $((t1 - t0)) s (log: $OUT/$name.log)"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((t1 - t0))" "$cmd" >> "$OUT/steps.tsv"
done

"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, wall, cmd = line.split("\t", 3)
    steps.append({"step": name, "exit": rc if rc == "skipped" else int(rc), "wall_s": int(wall), "command": cmd,
                  "timed_out": rc == "124"})
dev = out / "device.json"
manifest = {"device": json.loads(dev.read_text()) if dev.exists() else None, "steps": steps,
            "files": sorted(p.name for p in out.iterdir())}
(out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
print("[gpu.sh] wrote", out / "manifest.json")
EOF
