#!/usr/bin/env python3
"""Idle CPU of logdist: no traffic, three analyzers connected.

Usage: scripts/idle-cpu.py [LOGDIST_BIN] [SECONDS]
(defaults: target/release/logdist, 30)

Starts logdist on free loopback ports with a minimal config, connects three
seed-handshake analyzers, waits until the admin API lists them, then reads
logdist's CPU time from /proc over SECONDS and prints it as a share of one
core, and its resident memory. Everything a quiet logdist does on its own (timers, probes, metrics)
shows up here. Stops logdist (SIGTERM, by pid) at the end.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def main():
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__.strip())
        return
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/logdist"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    work = tempfile.mkdtemp(prefix="logdist-idle-")
    ready = os.path.join(work, "ready.json")
    config = os.path.join(work, "logdist.toml")
    with open(config, "w") as f:
        f.write(
            '[[listeners]]\naddress = "127.0.0.1:0"\n'
            '[analyzers]\nlisten = "127.0.0.1:0"\n'
            '[admin]\nlisten = "127.0.0.1:0"\n'
            f'[delivery]\ndead_letter_path = "{work}/dead.ndjson"\n'
        )
    logdist = subprocess.Popen(
        [binary, "--config", config, "--ready-file", ready],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 10
        while not os.path.exists(ready):
            if time.time() > deadline or logdist.poll() is not None:
                sys.exit("logdist did not start (no ready file within 10 s)")
            time.sleep(0.05)
        addresses = json.load(open(ready))
        host, port = addresses["analyzers"].rsplit(":", 1)
        analyzers = []
        for _ in range(3):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(struct.pack(">f", 1.0))  # seed handshake: the weight
            analyzers.append(s)
        url = f"http://{addresses['admin']}/api/v1/analyzers"
        while True:
            listed = json.load(urllib.request.urlopen(url, timeout=5))["analyzers"]
            if sum(1 for a in listed if a["connected"]) == 3:
                break
            if time.time() > deadline:
                sys.exit("the three analyzers were not connected within 10 s")
            time.sleep(0.05)
        hz = os.sysconf("SC_CLK_TCK")
        start, t0 = cpu_ticks(logdist.pid), time.time()
        time.sleep(seconds)
        used, wall = (cpu_ticks(logdist.pid) - start) / hz, time.time() - t0
        rss = next(
            line.split()[1]
            for line in open(f"/proc/{logdist.pid}/status")
            if line.startswith("VmRSS:")
        )
        print(
            f"idle logdist, 3 analyzers connected: {used / wall * 100:.3f} % of one core "
            f"({used:.2f} s of CPU in {wall:.0f} s; resolution {100 / hz / wall:.3f} %), "
            f"RSS {int(rss) / 1024:.1f} MiB"
        )
    finally:
        logdist.terminate()
        logdist.wait(timeout=10)


if __name__ == "__main__":
    main()
