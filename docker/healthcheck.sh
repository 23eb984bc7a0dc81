#!/usr/bin/env bash
# Health check for the official tensorflow/serving image (Docker Compose healthcheck, k8s probes).
#
# Why a bash script: the image is Ubuntu + ca-certificates + tensorflow_model_server (and bash, which its
# own entrypoint uses); there is no curl, wget or python in the CPU image. Bash's /dev/tcp redirection is
# enough for one HTTP GET. Only bash builtins are used (no grep/sed/timeout), so it also runs on the
# CUDA-based -gpu image and on any host.
#
# Why not just an HTTP 200 check: GET /v1/models/<name> answers 200 while a version is still LOADING (and
# after it went END/unloaded); only the JSON "state" says whether it can serve.
#
# Usage:  bash healthcheck.sh [--live] [MODEL ...]
#   ready (default): every model has at least one version in state AVAILABLE -> exit 0, else exit 1.
#   --live:          the REST server answers a model-status request with an HTTP response at all
#                    (any state): the process is up and not wedged. For liveness probes, so a slow model
#                    load or a bad new version never gets the pod restarted.
# Models: the arguments, else $TFS_MODELS (space separated), else every `name:` in $TFS_MODEL_CONFIG
# (default /models/models.config, the file the server itself reads).
# Environment: TFS_HOST (127.0.0.1), TFS_REST_PORT (8501), TFS_READ_TIMEOUT seconds per read (3).
set -u
export LC_ALL=C  # byte-wise `read -N` for Content-Length

host=${TFS_HOST:-127.0.0.1}
port=${TFS_REST_PORT:-8501}
read_timeout=${TFS_READ_TIMEOUT:-3}
config=${TFS_MODEL_CONFIG:-/models/models.config}
mode=ready
if [[ ${1:-} == --live ]]; then
  mode=live
  shift
fi

models=("$@")
if ((${#models[@]} == 0)) && [[ -n ${TFS_MODELS:-} ]]; then
  read -r -a models <<<"$TFS_MODELS"
fi
if ((${#models[@]} == 0)); then
  if [[ ! -r $config ]]; then
    echo "unhealthy: no model names given and model config $config is not readable"
    exit 2
  fi
  # Text-format ModelServerConfig: only ModelConfig entries have a `name` field.
  name_re="(^|[^a-zA-Z0-9_])name[[:space:]]*:[[:space:]]*[\"']([^\"']+)[\"']"
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    while [[ $line =~ $name_re ]]; do
      models+=("${BASH_REMATCH[2]}")
      line=${line#*"${BASH_REMATCH[0]}"}
    done
  done <"$config"
  if ((${#models[@]} == 0)); then
    echo "unhealthy: no model names found in $config"
    exit 2
  fi
fi

# GET path -> sets $status_code and $body; returns non-zero when no HTTP response came back.
http_get() {
  local path=$1 line len
  status_code="" body=""
  { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: application/json\r\nConnection: close\r\n\r\n' \
    "$path" "$host" "$port" >&3 || { exec 3<&-; return 1; }
  IFS= read -r -t "$read_timeout" line <&3 || { exec 3<&-; return 1; }
  line=${line%$'\r'}
  [[ $line =~ ^HTTP/[0-9.]+[[:space:]]+([0-9]{3}) ]] || { exec 3<&-; return 1; }
  status_code=${BASH_REMATCH[1]}
  len=""
  while IFS= read -r -t "$read_timeout" line <&3; do
    line=${line%$'\r'}
    [[ -z $line ]] && break
    shopt -s nocasematch
    [[ $line =~ ^content-length:[[:space:]]*([0-9]+) ]] && len=${BASH_REMATCH[1]}
    shopt -u nocasematch
  done
  if [[ -n $len ]]; then
    # Read exactly the body: a keep-alive server would otherwise hold us until the timeout.
    ((len > 0)) && IFS= read -r -d '' -N "$len" -t "$read_timeout" body <&3
  else
    while IFS= read -r -t "$read_timeout" line <&3; do body+=$line; done
    body+=$line
  fi
  exec 3<&-
  return 0
}

available_re='"state"[[:space:]]*:[[:space:]]*"AVAILABLE"'
failed=()
for model in "${models[@]}"; do
  if ! http_get "/v1/models/$model"; then
    echo "unhealthy: no HTTP answer from $host:$port for /v1/models/$model"
    exit 1
  fi
  if [[ $mode == live ]]; then
    echo "live: REST server answered HTTP $status_code for /v1/models/$model"
    exit 0
  fi
  if [[ $status_code != 200 ]]; then
    failed+=("$model (HTTP $status_code)")
  elif ! [[ $body =~ $available_re ]]; then
    state_re='"state"[[:space:]]*:[[:space:]]*"([A-Z_]+)"'
    state=unknown
    [[ $body =~ $state_re ]] && state=${BASH_REMATCH[1]}
    failed+=("$model ($state)")
  fi
done

if ((${#failed[@]})); then
  echo "unhealthy: not AVAILABLE: ${failed[*]}"
  exit 1
fi
echo "healthy: AVAILABLE: ${models[*]}"
exit 0
