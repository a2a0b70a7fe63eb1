#!/usr/bin/env bash
# The GPU container's entry point (docker/compose.yaml): build the TensorRT engines the model
# repository asks for and the engine cache does not hold yet, then start tritonserver with the
# arguments given (the image's CMD, or compose's `command`).
#
# `fusionrank build --device gpu --tensorrt-engine /engines/query_encoder.plan` leaves, in the
# encoder's version folder, model.plan as a link to that path, the ONNX graph as model.onnx and
# trtexec.args (precision and optimisation profile). At the first start the link dangles: the
# engine is built here, for this GPU, into the cache volume; later starts find it. Models on the
# onnxruntime backend build their engines themselves at first load, into the folders their
# trt_engine_cache_path names (created here), so those are cached on the volume too.
set -euo pipefail

MODEL_REPOSITORY=${MODEL_REPOSITORY:-/models}
ENGINE_CACHE=${ENGINE_CACHE:-/engines}
TRTEXEC=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}
TRITONSERVER=${TRITONSERVER:-tritonserver}

log() { echo "entrypoint: $*" >&2; }

build_engine() {  # ONNX graph, engine path, trtexec arguments file
    local onnx=$1 engine=$2 args=$3
    mkdir -p "$(dirname "$engine")"
    if [[ -x "$TRTEXEC" ]]; then
        # shellcheck disable=SC2046  # the file holds several options, split on purpose
        "$TRTEXEC" --onnx="$onnx" --saveEngine="$engine.partial" $(cat "$args") >&2
    elif python3 -c "import tensorrt" 2>/dev/null; then
        fusionrank export-tensorrt --onnx "$onnx" --precision fp16 --out "$engine.partial"
    else
        log "cannot build $engine: neither trtexec ($TRTEXEC) nor the tensorrt package is here"
        return 1
    fi
    mv "$engine.partial" "$engine"  # only a finished engine counts as built
}

mkdir -p "$ENGINE_CACHE"
shopt -s nullglob
for plan in "$MODEL_REPOSITORY"/*/*/model.plan; do
    [[ -e "$plan" ]] && continue  # an engine in place, or a link to one already built
    folder=$(dirname "$plan")
    engine=$(readlink "$plan")
    log "building the TensorRT engine $engine from $folder/model.onnx (first start)"
    started=$SECONDS
    build_engine "$folder/model.onnx" "$engine" "$folder/trtexec.args"
    log "built $engine in $((SECONDS - started)) s"
done
for config in "$MODEL_REPOSITORY"/*/config.pbtxt; do  # each value after the cache path's key
    sed -n '/key: "trt_engine_cache_path"/{n;s/.*value: "\(.*\)".*/\1/p}' "$config"
done | while read -r cache; do mkdir -p "$cache"; done

# Model control (load, unload, uploaded model code) is never open on the served ports. With a
# key (FUSIONRANK_CONTROL_KEY, or a file such as a Docker secret named by
# FUSIONRANK_CONTROL_KEY_FILE): explicit model control, everything loaded at start, the
# model-repository endpoints answering only callers that send the key, as `fusionrank serve`
# does, so `fusionrank deploy --control-key-file` can add and drop versions
# (docs/operations.md). Without one: no model control at all (--model-control-mode=none).
CONTROL_KEY=${FUSIONRANK_CONTROL_KEY:-}
if [[ -z "$CONTROL_KEY" && -n "${FUSIONRANK_CONTROL_KEY_FILE:-}" ]]; then
    CONTROL_KEY=$(tr -d '[:space:]' < "$FUSIONRANK_CONTROL_KEY_FILE")
fi
if [[ -n "$CONTROL_KEY" ]]; then
    rule="model-repository:fusionrank-control-key=$CONTROL_KEY"
    exec "$TRITONSERVER" --model-repository="$MODEL_REPOSITORY" \
        --model-control-mode=explicit --load-model="*" \
        --http-restricted-api="$rule" --grpc-restricted-protocol="$rule" "$@"
fi
log "no FUSIONRANK_CONTROL_KEY(_FILE): serving without model control (deploy needs a key)"
exec "$TRITONSERVER" --model-repository="$MODEL_REPOSITORY" --model-control-mode=none "$@"
