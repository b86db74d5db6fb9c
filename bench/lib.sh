# Shell helpers shared by the bench scripts (sourced, not run).

# listening FILE [SECONDS] -> the URL a server printed to FILE, waiting up to SECONDS (default 10).
listening() {
  local tries=$(( ${2:-10} * 10 ))
  for _ in $(seq "$tries"); do
    if grep -qo 'http://[0-9.:]*' "$1" 2>/dev/null; then grep -o 'http://[0-9.:]*' "$1" | head -1; return; fi
    sleep 0.1
  done
  echo "no listening line in $1" >&2; exit 1
}
