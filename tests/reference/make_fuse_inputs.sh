#!/bin/sh
# make_fuse_inputs.sh — the inputs of check_fuse_transformers.py, made with a lorac build:
# the model-ref adapters of tiny-mistral and tiny-llama in lorac's two layouts, and the
# models `lorac fuse` makes from them in float32 and bfloat16.
# Usage (repository root): tests/reference/make_fuse_inputs.sh BUILD_DIR INPUTS_DIR
set -eu
BUILD=$1
IN=$2
"$BUILD/tests/model/test_fuse" --write-adapters "$IN"
for m in tiny-mistral tiny-llama; do
    for d in f32:float32 bf16:bfloat16; do
        "$BUILD/lorac" fuse --model "tests/fixtures/models/$m" --adapter-path "$IN/$m/adapters" \
            --save-path "$IN/$m/fused-${d#*:}" --dtype "${d%%:*}" --force -q
    done
done
echo "wrote $IN"
