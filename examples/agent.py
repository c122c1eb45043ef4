#!/usr/bin/env python3
"""A planrun fleet agent in plain Python (standard library only), written from
docs/agent-protocol.md: use it as a starting point for agents in other languages.

Run by the fleet driver with `command = ["python3", "examples/agent.py"]`; it gets its id, its
token, the coordination directory, the heartbeat interval and a seed from the environment.
"""
import json
import os
import signal
import sys
import time

AGENT = os.environ["PLANRUN_AGENT_ID"]
# Every response and heartbeat carries it: it is how the coordinator knows they are ours.
TOKEN = os.environ["PLANRUN_AGENT_TOKEN"]
ROOT = os.environ["PLANRUN_COORD_DIR"]
HEARTBEAT = int(os.environ.get("PLANRUN_HEARTBEAT_MS", "1000")) / 1000.0
PARENT = os.getppid()
STARTED = time.monotonic()
handled = 0
errors = 0


def now_ms():
    return int(time.time() * 1000)


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_atomic(directory, name, obj):
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, os.path.join(directory, name))


def heartbeat():
    write_atomic(os.path.join(ROOT, "status"), f"{AGENT}.json", {
        "agentId": AGENT, "pid": os.getpid(), "timestamp": now_ms(),
        "uptime": int((time.monotonic() - STARTED) * 1000),
        "memory": {"rss": rss(), "allocated": 0},
        "coordinationCount": handled, "errorCount": errors,
        "token": TOKEN,
    })


def answer(msg):
    kind, data = msg["type"], msg.get("data") or {}
    if kind == "ping":
        return {"pong": True, "timestamp": now_ms()}
    if kind == "compute":
        return {"result": sum(i * i for i in range(data.get("iterations", 1000)))}
    if kind == "memory_test":
        block = bytearray(data.get("size", 1000) * 1024)
        return {"allocated": len(block)}
    return {"echo": data}


def main():
    global handled, errors
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    seen = set()
    messages = os.path.join(ROOT, "messages")
    last_beat = 0.0
    while True:
        if os.getppid() != PARENT:  # the runner is gone: so are we
            return
        if time.monotonic() - last_beat >= HEARTBEAT:
            heartbeat()
            last_beat = time.monotonic()
        for name in sorted(os.listdir(messages)):
            if name.startswith(".") or not name.endswith(".json") or name in seen:
                continue
            seen.add(name)
            try:
                with open(os.path.join(messages, name)) as f:
                    msg = json.load(f)
            except (OSError, ValueError):
                errors += 1
                continue
            if msg.get("to") is not None and AGENT not in msg["to"]:
                continue
            started = time.monotonic()
            result = answer(msg)
            handled += 1
            write_atomic(os.path.join(ROOT, "responses"), f"{AGENT}--{msg['messageId']}.json", {
                "agentId": AGENT, "messageId": msg["messageId"], "timestamp": now_ms(),
                "processingTime": (time.monotonic() - started) * 1000,
                "coordinationCount": handled, "errorCount": errors,
                "uptime": int((time.monotonic() - STARTED) * 1000),
                "memory": {"rss": rss(), "allocated": 0},
                "response": result,
                "token": TOKEN,
            })
        time.sleep(0.01)


if __name__ == "__main__":
    main()
