# logdist tasks. `just` lists them.

default:
    @just --list

# ---- Load tests (crates/logdist-loadtest; README there) ----------------------
# Extra arguments go to logdist-loadtest, e.g. `just loadtest-basic --duration 10s`
# or `just loadtest-chaos --checksum fnv --seed 7`. Results land in
# loadtest/results/<profile>-<time>/ (summary.txt/json, timeline.csv,
# weights.csv, chart.svg, logdist.log). Exit status 0 only if every invariant held.

# Build the distributor and the load tester (release).
loadtest-build:
    cargo build --release -p logdist -p logdist-loadtest

# 3 emitters / 3 analyzers, 300 msg/s each, 60 s, one priority.
loadtest-basic *ARGS: loadtest-build
    ./target/release/logdist-loadtest basic {{ARGS}}

# 100 emitters / 10 analyzers, 800 msg/s each (80,000 msg/s), 120 s, weighted priorities.
loadtest-throughput *ARGS: loadtest-build
    ./target/release/logdist-loadtest throughput {{ARGS}}

# 20 emitters / 8 analyzers, 500 msg/s each, 300 s, analyzer kills, stalls and restarts.
loadtest-chaos *ARGS: loadtest-build
    ./target/release/logdist-loadtest chaos {{ARGS}}

# The benchmark: ramp the offered rate until loss or p99 over the bound; prints msg/s and MB/s.
# First the same ramp against the load tester's bare relay (the machine's limit), then
# logdist, and logdist / relay; `just loadtest-max --baseline none` ramps logdist only.
loadtest-max *ARGS: loadtest-build
    ./target/release/logdist-loadtest max --baseline relay {{ARGS}}

# 8 ack-NDJSON emitters / 4 analyzers, 500 msg/s each, 120 s; logdist in disk mode
# SIGKILLed and restarted every 10 s: every message acked ok must arrive.
loadtest-crash *ARGS: loadtest-build
    ./target/release/logdist-loadtest crash {{ARGS}}

# The load tester's own tests, end-to-end runs against a real logdist included.
loadtest-test:
    cargo build -p logdist
    cargo test -p logdist-loadtest

# ---- Containers (Dockerfile, docker-compose.yml; README, "Run with Docker") ------

# Build the image logdist:local (logdist, logdist-ship, logdist-loadtest).
docker-build *ARGS:
    docker build -t logdist:local {{ARGS}} .

# (Extra arguments go to `docker compose up`, e.g. `just compose-up -d --scale analyzer-3=2`.)
# Build and start logdist, 3 analyzers (weights 1:2:3), 3 emitters and a shipper; Ctrl-C stops.
compose-up *ARGS:
    docker compose up --build {{ARGS}}

# Stop and remove everything `compose-up` started (add -v to drop the volumes too).
compose-down *ARGS:
    docker compose --profile monitoring down {{ARGS}}

# Lint the Dockerfile and docker-compose.yml without a Docker engine (scripts/README.md).
lint-container:
    scripts/lint-container.sh

# The max benchmark in memory and disk mode, as a Markdown table.
bench *ARGS:
    scripts/bench.sh {{ARGS}}

# ---- The two README commands ---------------------------------------------------

# The main job: a complete distributor + emitters + analyzers run with a report.
demo:
    cargo build --release -p logdist -p logdist-loadtest
    ./target/release/logdist-loadtest basic --duration 20s

# Fuzz every decoder for SECONDS per target (needs cargo-fuzz; docs/security.md, "Fuzzing").
fuzz SECONDS="60":
    scripts/fuzz.sh {{SECONDS}}

# Every test (what CI runs after fmt and clippy: see .ci/run).
test:
    cargo test --workspace
