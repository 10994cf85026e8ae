# Shell helpers the perf scripts share; sourced, not run.

# wait_port PORT: returns once something listens on 127.0.0.1:PORT (fails after 10 s).
wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# metric_sum URL NAME [curl flags...]: the sum of the Prometheus samples of NAME (any
# labels) at URL, as an integer; nothing when the page or the metric is missing.
metric_sum() {
    local url=$1 name=$2
    shift 2
    { curl -fsS --max-time 5 "$@" "$url" 2>/dev/null || true; } | awk -v m="$name" '
        $1 == m || index($1, m "{") == 1 { s += $NF; n++ }
        END { if (n) printf "%.0f\n", s }'
}

# make_cert DIR: a throwaway self-signed certificate for 127.0.0.1 and localhost in
# DIR/cert.pem, its key in DIR/key.pem (EC P-256, valid for 2 days). CA:FALSE, for the
# client that takes it as its own CA (loadgen --ca-file): webpki refuses a certificate
# that says it is a CA as a server's.
make_cert() {
    mkdir -p "$1"
    if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>"$1/openssl.log"; then
        cat "$1/openssl.log" >&2
        return 1
    fi
}
