#!/usr/bin/env python3
"""Writes the offline demo's context: a synthetic service log of about SIZE
MiB with one needle line (a secret launch code) and a known number of ERROR
lines. Prints the ground truth as JSON: {"needle", "errors", "lines", "bytes"}.

    python3 examples/demo/haystack.py OUT_FILE [--mib 8] [--seed 7]
"""

import argparse
import json
import random

HOSTS = [f"web-{i:02d}" for i in range(1, 13)] + ["db-01", "db-02", "cache-01", "queue-01"]
PATHS = ["/api/items", "/api/users", "/api/orders", "/health", "/api/search", "/static/app.js"]
WORDS = ["TANGERINE", "OBSIDIAN", "HALCYON", "MERIDIAN", "SAFFRON", "ZEPHYR"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--mib", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    target = int(args.mib * 1024 * 1024)
    needle = f"{rng.choice(WORDS)}-{rng.randint(1000, 9999)}-{rng.choice(WORDS)}"
    needle_at = rng.uniform(0.55, 0.8) * target
    written = errors = lines = 0
    placed = False
    second = 0
    with open(args.out, "w", encoding="utf-8") as out:
        while written < target:
            second += rng.randint(0, 2)
            ts = f"2025-03-14T{8 + second // 3600 % 12:02d}:{second // 60 % 60:02d}:{second % 60:02d}.{rng.randint(0, 999):03d}Z"
            host = rng.choice(HOSTS)
            if not placed and written >= needle_at:
                line = f"{ts} vault-01 INFO  audit note: the secret launch code is {needle}\n"
                placed = True
            else:
                roll = rng.random()
                level = "ERROR" if roll < 0.03 else "WARN " if roll < 0.10 else "INFO "
                status = 500 if level == "ERROR" else rng.choice([200, 200, 200, 201, 204, 304, 404])
                line = (
                    f"{ts} {host} {level} {rng.choice(['GET', 'POST', 'PUT'])} "
                    f"{rng.choice(PATHS)}/{rng.randint(1, 99999)} {status} {rng.randint(1, 900)}ms "
                    f"user=u{rng.randint(1000, 9999)} req={rng.getrandbits(48):012x}\n"
                )
                errors += level == "ERROR"
            out.write(line)
            written += len(line.encode())
            lines += 1
    print(json.dumps({"needle": needle, "errors": errors, "lines": lines, "bytes": written}))


if __name__ == "__main__":
    main()
