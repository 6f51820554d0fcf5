#!/usr/bin/env python3
"""Memory and speed of a disk-mode backlog (docs/operations.md, "Durability").

usage: scripts/backlog-memory.py LOGDIST_BIN MESSAGES SIZE
  e.g. scripts/backlog-memory.py target/release/logdist 5000000 100

Starts LOGDIST_BIN in disk mode on 127.0.0.1 ephemeral ports with its spool
in a temporary directory and no analyzer, sends MESSAGES binary frames of
SIZE payload bytes (a multiple of 10000 messages), waits until the spool
holds them all, prints resident memory (VmRSS, VmHWM) and the durability
stats, then connects one seed analyzer and times the backlog's drain.
Stops logdist (SIGTERM) and removes the directory at the end."""
import json, shutil, socket, struct, subprocess, sys, tempfile, time, urllib.request

if len(sys.argv) != 4:
    sys.exit(__doc__)
binary, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = tempfile.mkdtemp()
open(f"{d}/l.toml", "w").write(f"""
[[listeners]]
address = "127.0.0.1:0"
[analyzers]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[delivery]
dead_letter_path = "{d}/dead.ndjson"
[durability]
mode = "disk"
dir = "{d}/spool"
""")
p = subprocess.Popen([binary, "--config", f"{d}/l.toml", "--ready-file", f"{d}/r.json"],
                     stderr=open(f"{d}/log.txt", "w"))
while True:
    try:
        r = json.load(open(f"{d}/r.json")); break
    except Exception:
        time.sleep(0.05)
def addr(a):
    h, port = a.rsplit(":", 1); return (h, int(port))
def stats():
    return json.load(urllib.request.urlopen(f"http://{r['admin']}/api/v1/stats"))
def mem(field):
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith(field): return int(line.split()[1]) // 1024
rss0 = mem("VmRSS")
frame = struct.pack(">IB", 5 + size, 3) + b"x" * size
batch = frame * 10000
s = socket.create_connection(addr(r["listeners"][0]["address"]))
t0 = time.time()
for _ in range(n // 10000):
    s.sendall(batch)
s.close()
while stats()["totals"]["accepted"] < n:
    time.sleep(0.05)
t1 = time.time()
peak_ingest = mem("VmHWM")
while stats()["durability"]["spool_messages"] < n:
    time.sleep(0.05)
print(f"peak RSS while the spool writer caught up: {peak_ingest} MiB; all written after {time.time()-t0:.1f} s")
st = stats()
print(f"accepted {n} messages of {size} B in {t1-t0:.1f} s ({n/(t1-t0):.0f} msg/s)")
print(f"RSS before {rss0} MiB, now {mem('VmRSS')} MiB, peak {mem('VmHWM')} MiB")
print("durability", json.dumps(st["durability"]))
print("held", st["totals"]["holding"], "backlogged", st["totals"]["backlogged"])
a = socket.create_connection(addr(r["analyzers"]))
a.sendall(struct.pack(">f", 1.0))
got, buf, t2 = 0, b"", time.time()
while got < n:
    buf += a.recv(1 << 20)
    at = 0
    while len(buf) - at >= 4:
        ln = struct.unpack_from(">I", buf, at)[0]
        if len(buf) - at < ln: break
        at += ln; got += 1
        if got % 1000 == 0: a.sendall(struct.pack(">I", 0x80000000 | got))
    buf = buf[at:]
a.sendall(struct.pack(">I", 0x80000000 | got))
t3 = time.time()
print(f"drained {got} in {t3-t2:.1f} s ({got/(t3-t2):.0f} msg/s); peak RSS {mem('VmHWM')} MiB")
time.sleep(1)
print("durability after", json.dumps(stats()["durability"]))
p.terminate(); p.wait()
shutil.rmtree(d)
