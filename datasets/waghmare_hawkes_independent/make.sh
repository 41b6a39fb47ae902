#!/bin/sh
# Rebuilds this folder's train.json, dev.json, test.json and truth.json (the times to the last bit or two: numpy's
# vectorised exp and log round differently on CPUs with and without AVX-512; marks and counts exactly).
# Waghmare et al. (CIKM 2022), "Hawkes Ind.": their generator (tick's HawkesKernelExp(intensity=alpha/beta,
# decay=beta)) has kernel alpha e^{-beta t}, so alpha is the jump of the intensity: --alpha-convention jump.
# The paper's 24,576 sequences (14,745 / 4,915 / 4,916) are scaled down to 2,000 in the same 60/20/20 split;
# for the paper's size use --n-seqs 24576.
set -e
cd "$(dirname "$0")"
nde tpp generate hawkes --dim 2 --mu 0.1,0.05 --alpha "0.2,0; 0,0.4" --beta "1,1; 1,2" \
    --alpha-convention jump --n-seqs 2000 --window 100 --split 0.6,0.2,0.2 --seed 0 --out .
