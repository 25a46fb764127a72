#!/usr/bin/env python3
"""A TCP proxy that behaves like a slow runner link, for scripts/bench-ci.sh (loopback only).

Usage: bench-netem.py LISTEN_PORT UPSTREAM_HOST:PORT MBIT LATENCY_MS

On SIGTERM it prints "DOWN_BYTES UP_BYTES" (upstream->client, client->upstream) and exits.
Every byte in either direction shares one token bucket per direction (MBIT megabits per
second, like one network link for all connections of the runner), and a connection pays
LATENCY_MS before its first byte and again whenever a direction starts sending after being
idle (a request or a response: one round trip each). Nothing is changed in the bytes.
"""
import asyncio, signal, sys, time

listen_port = int(sys.argv[1])
up_host, up_port = sys.argv[2].rsplit(":", 1)
rate = float(sys.argv[3]) * 1e6 / 8  # bytes per second
latency = float(sys.argv[4]) / 1000.0
CHUNK = 16 * 1024


class Bucket:
    """One link direction: bytes leave no faster than `rate`."""

    def __init__(self):
        self.next_free = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n):
        async with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / rate
            wait = self.next_free - now
        if wait > 0:
            await asyncio.sleep(wait)


down, up = Bucket(), Bucket()
moved = {"down": 0, "up": 0}


async def pump(reader, writer, bucket, key):
    last = 0.0
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            now = time.monotonic()
            if now - last > 0.005:  # a new burst: a request or a response starts
                await asyncio.sleep(latency / 2)
            await bucket.take(len(data))
            moved[key] += len(data)
            last = time.monotonic()
            writer.write(data)
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(cr, cw):
    await asyncio.sleep(latency)  # TCP handshake
    try:
        ur, uw = await asyncio.open_connection(up_host, int(up_port))
    except OSError:
        cw.close()
        return
    await asyncio.gather(pump(cr, uw, up, "up"), pump(ur, cw, down, "down"))


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    serving = asyncio.ensure_future(server.serve_forever())
    await stop
    serving.cancel()
    print(moved["down"], moved["up"], flush=True)


asyncio.run(main())
