#!/usr/bin/env python3
"""A TCP proxy that behaves like a slow runner link, for scripts/bench-ci.sh (loopback only).

Usage: bench-netem.py LISTEN_PORT UPSTREAM_HOST:PORT MBIT LATENCY_MS

Prints "listening" to stderr once it accepts connections (it exits if the port is taken). On
SIGUSR1 it prints "DOWN_BYTES UP_BYTES" (upstream->client, client->upstream, since the last
SIGUSR1) and starts counting again; on SIGTERM it prints them and exits.
Every byte in either direction shares one token bucket per direction (MBIT megabits per
second, like one network link for all connections of the runner), and a connection pays
LATENCY_MS before its first byte (the handshake); then every byte arrives LATENCY_MS/2 after
it was sent, each way (a request and its response: one round trip). Nothing is changed in the
bytes.
"""
import asyncio, signal, sys, time

listen_port = int(sys.argv[1])
up_host, up_port = sys.argv[2].rsplit(":", 1)
rate = float(sys.argv[3]) * 1e6 / 8  # bytes per second
latency = float(sys.argv[4]) / 1000.0
CHUNK = 16 * 1024


BURST = 0.05  # seconds of credit: a pump woken late (a busy machine) catches up, as a link would


class Bucket:
    """One link direction: bytes leave no faster than `rate` on average (over BURST seconds)."""

    def __init__(self):
        self.next_free = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n):
        async with self.lock:
            now = time.monotonic()
            start = max(now - BURST, self.next_free)
            self.next_free = start + n / rate
            wait = self.next_free - now
        if wait > 0:
            await asyncio.sleep(wait)


down, up = Bucket(), Bucket()
moved = {"down": 0, "up": 0}


async def pump(reader, writer, bucket, key):
    """Copies one direction through a delay line: each chunk leaves LATENCY/2 after it arrived
    and no faster than the bucket allows. A propagation delay, not a stall: a sender that
    streams with pauses (compressing as it uploads) or a receiver that reads slowly does not
    pay the latency again after every pause. On EOF it half-closes the other side (the other
    direction keeps flowing); on a reset it aborts it."""
    line = asyncio.Queue(maxsize=64)  # up to 1 MiB in flight per direction, then backpressure
    broken = False

    async def deliver():
        nonlocal broken
        while (item := await line.get()) is not None:
            due, data = item
            if broken:
                continue  # keep draining so the reader never blocks on a dead link
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await bucket.take(len(data))
            try:
                writer.write(data)
                await writer.drain()
                moved[key] += len(data)
            except (ConnectionResetError, BrokenPipeError):
                broken = True

    out = asyncio.ensure_future(deliver())
    try:
        while data := await reader.read(CHUNK):
            await line.put((time.monotonic() + latency / 2, data))
    except (ConnectionResetError, BrokenPipeError):
        broken = True
    await line.put(None)
    await out
    try:
        if broken or not writer.can_write_eof():
            writer.transport.abort()
        else:
            writer.write_eof()
    except OSError:
        pass


async def handle(cr, cw):
    await asyncio.sleep(latency)  # TCP handshake
    try:
        ur, uw = await asyncio.open_connection(up_host, int(up_port))
    except OSError as e:
        # a client sees this as a connection closed before any response
        print(f"upstream {up_host}:{up_port}: {e}", file=sys.stderr, flush=True)
        cw.close()
        return
    try:
        await asyncio.gather(pump(cr, uw, up, "up"), pump(ur, cw, down, "down"))
    finally:
        cw.close()
        uw.close()


def report():
    print(moved["down"], moved["up"], flush=True)
    moved["down"] = moved["up"] = 0


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, report)
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    serving = asyncio.ensure_future(server.serve_forever())
    print("listening", listen_port, file=sys.stderr, flush=True)
    await stop
    serving.cancel()
    report()


asyncio.run(main())
