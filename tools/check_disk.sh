#!/usr/bin/env bash
# Before the first install: torch 2.14.1 with its CUDA libraries takes about 6.2 GB in .venv.
# Stop with a clear message, before pip writes anything, when the disk cannot hold it.
set -u
need_gb=${1:-7}
dir=${2:-.}
free_kb=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
free_gb=$((free_kb / 1024 / 1024))
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "error: installing torch into $(cd "$dir" && pwd)/.venv needs about $need_gb GB free, but that disk has only $free_gb GB." >&2
  echo "       Free some space (old clones, .venv folders, /tmp) and run make again; nothing was installed." >&2
  exit 1
fi
