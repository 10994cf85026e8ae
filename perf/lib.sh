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
