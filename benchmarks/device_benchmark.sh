#!/bin/bash
# The ml-100k benchmark on a GPU machine without network access, with what travels beside the repo:
#   .whl/              RecBole 1.2.1 and the few pure-Python packages that machine lacks (pandas 2: see setup.py)
#   .cache/views/      the LLM views, generated here beforehand (the LLM package is too large to travel)
#   .cache/embeddings/ the catalogue embeddings of the embedding views (same reason)
# Each argument is one benchmark invocation (e.g. "--runs=BERT4Rec,SASRec --workers=9"); they run side by side
# for at most BUDGET seconds (timeout stops a whole invocation, its runs included). Every finished run is packed
# into $OUT/runs.tgz: unpack it in the repo root here and rebuild the table with
# `python run_lumos.py --benchmark --dataset=ml-100k --report_only=True`; a plain rerun finishes the rest.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import recbole_lumos, torch, pandas; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pandas', pandas.__version__)" || exit 1
for group in "$@"; do
  # shellcheck disable=SC2086  # a group is several --key=value words
  timeout -k 10 "${BUDGET:-480}" python3 run_lumos.py --benchmark --dataset=ml-100k $group > "$OUT/benchmark-$(echo "$group" | md5sum | cut -c1-6).log" 2>&1 &
done
wait
tar czf "$OUT/runs.tgz" --exclude='*.pth' results/benchmark
tail -n 20 "$OUT"/benchmark-*.log
