# Shell helpers shared by the bench scripts (sourced, not run).

# listening FILE [SECONDS] -> the URL a server printed to FILE (http:// or https://), waiting up
# to SECONDS (default 10).
listening() {
  local tries=$(( ${2:-10} * 10 ))
  for _ in $(seq "$tries"); do
    if grep -qo 'https\?://[0-9.:]*' "$1" 2>/dev/null; then grep -o 'https\?://[0-9.:]*' "$1" | head -1; return; fi
    sleep 0.1
  done
  echo "no listening line in $1" >&2; exit 1
}

# test_certs DIR -> DIR/ca.pem (a throwaway certificate authority), DIR/cert.pem and DIR/key.pem
# (a certificate for 127.0.0.1 and localhost it signed): for a mock served over TLS
# (tollway-mock --tls-cert --tls-key) and a provider account trusting it (ca_file).
test_certs() {
  local d=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$d/ca-key.pem" -out "$d/ca.pem" 2> /dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench-mock \
    -keyout "$d/key.pem" -out "$d/cert.csr" 2> /dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$d/ext.cnf"
  openssl x509 -req -in "$d/cert.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
    -days 2 -extfile "$d/ext.cnf" -out "$d/cert.pem" 2> /dev/null
}

# bench_setup NAME BINARY... -> REL (target/release), DIR (a new /tmp/tollway-NAME-XXXXXX), PIDS
# (processes killed at exit); exits if a BINARY (a name in target/release, or a path) is missing.
# Raises the open-file limit. Run from the repository's root.
bench_setup() {
  local name=$1 b
  shift
  REL=$PWD/target/release
  for b in "$@"; do
    [[ $b == */* ]] || b=$REL/$b
    [[ -x $b ]] || { echo "missing $b (cargo build --release --bins)" >&2; exit 1; }
  done
  DIR=$(mktemp -d "/tmp/tollway-$name-XXXXXX")
  PIDS=()
  trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
  ulimit -n 65536 2>/dev/null || true
}

# start_mock [ARG...] -> MOCK (its URL): tollway-mock on an ephemeral loopback port, in the
# background until exit (after bench_setup).
start_mock() {
  "$REL/tollway-mock" --listen 127.0.0.1:0 "$@" > "$DIR/mock.out" 2>&1 &
  PIDS+=($!)
  MOCK=$(listening "$DIR/mock.out")
}
