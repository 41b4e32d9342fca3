"""Python's `websockets` client through `iap proxy` to the emulator's
WebSocket echo app (behind its IAP gate): text and binary frames, a large
message, a close from either side.

Usage: python3 ws_peer_check.py PATH_TO_IAP_BINARY
"""

import asyncio
import os
import shlex
import signal
import subprocess
import sys

import websockets


NEEDED = ("IAP_EMULATOR_APP_URL", "IAP_EMULATOR_WS_URL", "IAP_EMULATOR_AUDIENCE",
          "GOOGLE_APPLICATION_CREDENTIALS")


def read_exports(proc):
    """Reads `export NAME=value` lines until the ones needed are in."""
    exports = {}
    for line in proc.stdout:
        line = line.strip()
        if not line.startswith("export "):
            continue
        name, _, value = line[len("export "):].partition("=")
        exports[name] = shlex.split(value)[0] if value else ""
        if all(n in exports for n in NEEDED):
            return exports
    raise SystemExit("iap emulator ended before printing its exports")


def wait_listening(proc):
    for line in proc.stdout:
        if line.startswith("listening on http://"):
            return line.split()[2][len("http://"):]
    raise SystemExit("iap proxy ended before listening")


async def check(proxy):
    url = f"ws://{proxy}/ws"
    async with websockets.connect(url, max_size=4 << 20) as ws:
        await ws.send("hello from python")
        assert await ws.recv() == "hello from python"
        blob = bytes(range(256)) * 4096  # 1 MiB
        await ws.send(blob)
        assert await ws.recv() == blob
    # The client closed; now the app closes first.
    async with websockets.connect(url) as ws:
        await ws.send("close")
        try:
            await ws.recv()
            raise SystemExit("expected the app to close")
        except websockets.ConnectionClosedOK as closed:
            assert closed.rcvd.code == 1000, closed
            assert closed.rcvd.reason == "bye", closed
    # Many at once.
    async def one(i):
        async with websockets.connect(url) as ws:
            await ws.send(f"socket {i}")
            assert await ws.recv() == f"socket {i}"
    await asyncio.gather(*(one(i) for i in range(20)))


def main():
    iap = sys.argv[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_", "IAP_"))}
    emulator = subprocess.Popen([iap, "emulator"], stdout=subprocess.PIPE, text=True, env=env)
    proxy = None
    try:
        exports = read_exports(emulator)
        proxy = subprocess.Popen(
            [iap, "proxy", "--target", exports["IAP_EMULATOR_APP_URL"], "--listen", "127.0.0.1:0",
             "--credentials", exports["GOOGLE_APPLICATION_CREDENTIALS"],
             "--audience", exports["IAP_EMULATOR_AUDIENCE"]],
            stdout=subprocess.PIPE, text=True, env=env)
        address = wait_listening(proxy)
        asyncio.run(asyncio.wait_for(check(address), 60))
        print("websockets peer check: ok")
    finally:
        for p in (proxy, emulator):
            if p is not None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
