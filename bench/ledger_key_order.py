#!/usr/bin/env python3
"""Why request ids are time-ordered (UUIDv7): the cost of inserting ledger-shaped rows into SQLite
once the table is large, with random (v4) against time-ordered (v7) primary keys.

    python3 bench/ledger_key_order.py [ROWS]     # default 1,000,000; writes /tmp/ledger-order-*.db

Same shape as the usage ledger: a text primary key `req_<32 hex>`, a timestamp and three indexes
(time; key, time; team, time), WAL with synchronous=NORMAL, 256-row batches. Prints the total time
and the cost per row over the last tenth of the inserts. Random keys land all over the primary-key
B-tree, which outgrows SQLite's page cache; time-ordered keys append at its right edge.
Standard library only (sqlite3).
"""
import os
import random
import sqlite3
import sys
import time
import uuid


def v7(ms, seq):
    # 48-bit milliseconds, version 7, a 12-bit counter, variant, random tail
    r = random.getrandbits(62)
    return "req_" + format((ms << 80) | (0x7 << 76) | ((seq & 0xFFF) << 64) | (0b10 << 62) | r, "032x")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    batch = 256
    for kind in ("v4", "v7"):
        path = f"/tmp/ledger-order-{kind}.db"
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE l (request_id TEXT PRIMARY KEY, ts_ms INTEGER, key_id TEXT, team TEXT,"
                   " model TEXT, provider TEXT, status INTEGER, input INTEGER, output INTEGER,"
                   " cost INTEGER, pad TEXT)")
        db.execute("CREATE INDEX l_ts ON l(ts_ms)")
        db.execute("CREATE INDEX l_k ON l(key_id, ts_ms)")
        db.execute("CREATE INDEX l_t ON l(team, ts_ms)")
        ms, seq, last = 1_795_000_000_000, 0, 0.0
        batches = n // batch
        t0 = time.time()
        for b in range(batches):
            rows = []
            for _ in range(batch):
                seq += 1
                if seq % 4 == 0:
                    ms += 1
                rid = ("req_" + uuid.uuid4().hex) if kind == "v4" else v7(ms, seq)
                rows.append((rid, ms, "k1", None, "small", "up", 200, 8, 12, 5, "x" * 40))
            t = time.time()
            with db:
                db.executemany("INSERT INTO l VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            if b >= batches * 9 // 10:
                last += time.time() - t
        db.close()
        print(f"{kind}: {batches * batch} rows in {time.time() - t0:.1f} s; last tenth "
              f"{last / (batches * batch / 10) * 1e6:.1f} µs per row; {os.path.getsize(path) >> 20} MB")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass


if __name__ == "__main__":
    main()
