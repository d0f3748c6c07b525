#!/usr/bin/env bash
# The GPU journey of docs/real_models.md, command for command, on stand-ins that run offline on a CPU:
# a tiny random Qwen2 with a ChatML chat template (tests/hub_fixtures.py) in place of Qwen/Qwen2.5-Math-1.5B-Instruct,
# a local GSM8K-format file in place of openai/gsm8k, and the sizes of configs/gsm8k_qwen.yaml shrunk with --set.
# Prints the wall time of each command. Usage: bash bench/gpu_journey.sh [OUT_DIR]   (default runs/gpu_journey)
# On a machine with CUDA it first runs bench/gpu_checks.py (precision, hub PRM layouts, vLLM pi_old when vLLM is
# installed, W&B under accelerate launch): pass GPU_CHECKS_ARGS="--hub-prm Qwen/Qwen2.5-Math-PRM-7B" to add the real PRM.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_journey}
rm -rf "$OUT" && mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 WANDB_SILENT=true TQDM_DISABLE=1
python - "$OUT" <<'EOF'
import json, sys
sys.path.insert(0, "tests")
from fixtures_formats import PROCESSBENCH_ROWS
from hub_fixtures import build_hub_model, write_gsm8k_file
out = sys.argv[1]
build_hub_model("qwen2", f"{out}/Qwen2.5-Math-1.5B-Instruct", seed=0)
write_gsm8k_file(f"{out}/gsm8k_train.jsonl", n=64)
write_gsm8k_file(f"{out}/gsm8k_test.jsonl", n=16)
with open(f"{out}/processbench_gsm8k.jsonl", "w") as handle:
    handle.writelines(json.dumps(row) + "\n" for row in PROCESSBENCH_ROWS)
EOF
MODEL="$OUT/Qwen2.5-Math-1.5B-Instruct"
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  python bench/gpu_checks.py ${GPU_CHECKS_ARGS:-} || echo "gpu_checks: some rows FAILED (table above); the journey goes on"
fi
# What a GPU box does not need: the stand-ins' paths and CPU-sized settings (the config keeps the paper's sizes).
TINY=(--set "policy.model=$MODEL" --set "data.source=$OUT/gsm8k_train.jsonl" --set "data.eval_source=$OUT/gsm8k_test.jsonl"
      --set policy.dtype=float32
      --set policy.max_length=320 --set policy.max_new_tokens=32 --set prm.max_length=320
      --set grpo.group_size=4 --set grpo.prompts_per_step=4 --set grpo.grad_accum=1 --set grpo.steps=3
      --set loop.rounds=1 --set loop.rl_steps_per_round=2 --set loop.mc_rollouts=2 --set loop.label_problems=4
      --set loop.init_label_problems=8 --set loop.samples_per_problem=2 --set loop.eval_problems=8 --set loop.eval_k=4
      --set loop.eval_mc_solutions=8 --set loop.prm_eval_data= --set compare.seeds=1
      --set "loop.cache_dir=$OUT/cache")
# The config's bf16 mixed precision (fp32 master weights, bf16 autocast) on a GPU; a CPU runs the same in fp32.
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  TINY+=(--set prm.mixed_precision=no --set grpo.mixed_precision=no)
fi
CONFIG=configs/gsm8k_qwen.yaml
declare -a TIMES
step() {  # step NAME COMMAND...
  local name=$1; shift
  local start=$SECONDS
  echo "+ $*" | cut -c1-300
  "$@" > "$OUT/$name.log" 2>&1 || { echo "FAILED: $name (log: $OUT/$name.log)"; tail -5 "$OUT/$name.log"; exit 1; }
  TIMES+=("$name $((SECONDS - start))")
}
step convert  prmloop data convert --format gsm8k --source "$OUT/gsm8k_test.jsonl" --split test --out "$OUT/test_steps.jsonl"
step sft      prmloop policy sft --config $CONFIG --set sft.steps=60 --set sft.lr=1e-3 --out "$OUT/sft" "${TINY[@]}"
step label    prmloop prm label --config $CONFIG --policy "$MODEL" --out "$OUT/labels.jsonl" --n 4 --samples 2 "${TINY[@]}" --set data.n_train=8
step prm      prmloop prm train --config $CONFIG --data "$OUT/labels.jsonl" --init "$MODEL" --out "$OUT/prm0" "${TINY[@]}"
step prm_eval prmloop prm eval  --config $CONFIG --prm "$OUT/prm0" --data "$OUT/processbench_gsm8k.jsonl" --format processbench --split gsm8k "${TINY[@]}"
step grpo     prmloop grpo    --config $CONFIG --policy "$MODEL" --prm "$OUT/prm0" --out "$OUT/grpo" "${TINY[@]}"
step compare  prmloop compare --config $CONFIG --out "$OUT/compare" "${TINY[@]}"
echo
echo "| command | wall s |"
echo "|---|---|"
for row in "${TIMES[@]}"; do echo "| ${row% *} | ${row##* } |"; done
echo "report: $OUT/compare/report.md"
