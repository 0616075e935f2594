#!/bin/bash
# The ml-100k benchmark on a lent GPU machine (bare: no network), with what travels beside the repo:
#   .whl/              RecBole 1.2.1 and the few pure-Python packages that machine lacks (pandas 2: see setup.py)
#   .cache/views/      the LLM views, generated here beforehand (the LLM package is too large to travel)
#   .cache/embeddings/ the catalogue embeddings of the embedding views (same reason)
# Runs WORKERS benchmark runs at a time for at most BUDGET seconds, then packs every finished run into $OUT;
# unpack that into results/benchmark/ here and rerun `python run_lumos.py --benchmark --dataset=ml-100k`:
# finished runs are kept, the rest run here (or on the next GPU machine).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import recbole_lumos, torch, pandas; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pandas', pandas.__version__)" || exit 1
timeout -k 10 "${BUDGET:-480}" python3 run_lumos.py --benchmark --dataset=ml-100k --workers="${WORKERS:-12}" "$@"
pkill -f run_lumos.py; sleep 2
tar czf "$OUT/runs.tgz" --exclude='*.pth' results/benchmark
cp docs/benchmarks/ml-100k* "$OUT/" 2>/dev/null
ls -la "$OUT"
