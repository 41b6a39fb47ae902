#!/bin/sh
# Rebuilds this folder's train.json, dev.json, test.json and truth.json byte for byte.
set -e
cd "$(dirname "$0")"
nde tpp generate hawkes --dim 1 --mu 0.5 --alpha 0.5 --beta 1.0 --n-seqs 300 --window 100 --split 0.8,0.1,0.1 \
    --seed 1 --out .
