#!/usr/bin/env bash
# DeepSpeed ZeRO-2 on CUDA GPUs (configs/accelerate/deepspeed_zero2.yaml); never run yet: no GPU was lent so far.
# Needs: pip install -e '.[deepspeed,dev]'. Usage: bash bench/gpu_deepspeed.sh [GPUS]   (default: every visible GPU)
# 1. tests/grpo_ddp_script.py (a tiny random Llama, 4 GRPO steps) in one plain process and under DeepSpeed ZeRO-2 on
#    the GPUs, once straight and once resumed from its step-2 checkpoint: prints each run's per-step loss, reward and
#    gradient norm (they should agree to about 1e-5 in fp32; the GPU config's bf16 is switched off here).
# 2. `prmloop prm train` on the same labels in one process and under ZeRO-2: prints both epochs' train losses.
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${1:-$(python -c "import torch; print(torch.cuda.device_count())")}
python -c "import torch, deepspeed; assert torch.cuda.is_available(), 'no CUDA GPU'; \
print('deepspeed', deepspeed.__version__, '| torch', torch.__version__, '|', torch.cuda.get_device_name())"
OUT=$(mktemp -d)
export WANDB_MODE=disabled TQDM_DISABLE=1
LAUNCH=(accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes "$GPUS"
        --mixed_precision no)
python tests/grpo_ddp_script.py "$OUT/one.json"
"${LAUNCH[@]}" tests/grpo_ddp_script.py "$OUT/zero2.json"
"${LAUNCH[@]}" tests/grpo_ddp_script.py "$OUT/zero2_resumed.json" --resume
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("one", "zero2", "zero2_resumed"):
    run = json.loads((out / f"{name}.json").read_text())
    rows = ", ".join(f"{r['loss']:.6f}/{r['reward']:.6f}/{r['grad_norm']:.6f}" for r in run["history"])
    print(f"{name:<14} {run['processes']} process(es), {run['distributed_type']}: loss/reward/grad_norm {rows}")
PY
QUICK=(--config configs/quick.yaml --set prm.batch_size=8 --set prm.epochs=2 --set prm.val_fraction=0.0)
python -m prmloop policy init --out "$OUT/policy" "${QUICK[@]}"
python -m prmloop prm label --policy "$OUT/policy" --method exact --samples 2 --out "$OUT/labels.jsonl" "${QUICK[@]}" \
    --set data.n_train=24
python -m prmloop prm train --data "$OUT/labels.jsonl" --init "$OUT/policy" --out "$OUT/prm_one" "${QUICK[@]}"
"${LAUNCH[@]}" -m prmloop prm train --data "$OUT/labels.jsonl" --init "$OUT/policy" --out "$OUT/prm_zero2" "${QUICK[@]}"
python -c "import json, sys; [print(d, [round(h['train_loss'], 6) for h in json.load(open(f'$OUT/{d}/prm_metrics.json'))['history']]) for d in ('prm_one', 'prm_zero2')]"
