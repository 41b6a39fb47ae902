#!/bin/sh
# Rebuilds this folder's train.json, dev.json, test.json and truth.json (the times to the last bit or two: numpy's
# vectorised exp and log round differently on CPUs with and without AVX-512; marks and counts exactly).
# Waghmare et al. (CIKM 2022), "Hawkes Dep. I": their generator (tick's HawkesKernelExp(intensity=alpha/beta,
# decay=beta)) has kernel alpha e^{-beta t}, so alpha is the jump of the intensity: --alpha-convention jump
# (with beta = 1 both conventions give the same process).
# The paper's 24,577 sequences (14,745 / 4,915 / 4,917) are scaled down to 2,000 in the same 60/20/20 split;
# for the paper's size use --n-seqs 24577.
set -e
cd "$(dirname "$0")"
nde tpp generate hawkes --dim 2 --mu 0.1,0.05 --alpha "0.2,0.1; 0.2,0.3" --beta 1 \
    --alpha-convention jump --n-seqs 2000 --window 100 --split 0.6,0.2,0.2 --seed 1 --out .
