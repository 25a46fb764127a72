#!/usr/bin/env python3
# Tiny HTTP reverse proxy for the e2e suites (registry, cache).
# Usage: e2e-proxy.py LISTEN_HOST:PORT UPSTREAM_HOST:PORT corrupt|flaky|drop
# mode corrupt: flip one byte (same size) in GET blob
# responses larger than 64 KiB. mode flaky: answer 503 to the first request of each path.
# mode drop: cut the connection after 40000 bytes of the first GET of each blob > 64 KiB.
import http.client, http.server, sys, threading
listen, upstream, mode = sys.argv[1], sys.argv[2], sys.argv[3]
seen, lock = set(), threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, fmt, *a):
        sys.stderr.write("%s %s\n" % (self.command, self.path)); sys.stderr.flush()
    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        if mode == "flaky":
            with lock:
                first = self.path not in seen
                seen.add(self.path)
            if first:
                self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers(); return
        c = http.client.HTTPConnection(upstream, timeout=120)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        hdrs["Host"] = upstream
        c.request(self.command, self.path, body=body, headers=hdrs)
        r = c.getresponse()
        self.send_response(r.status)
        length = r.getheader("Content-Length")
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", length)
        else:
            self.send_header("Connection", "close"); self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        flip = (mode == "corrupt" and self.command == "GET" and "/blobs/sha256:" in self.path
                and r.status == 200 and int(length or 0) > 65536)
        drop = False
        if mode == "drop" and self.command == "GET" and "/blobs/sha256:" in self.path \
                and r.status == 200 and int(length or 0) > 65536:
            with lock:
                drop = ("drop", self.path) not in seen
                seen.add(("drop", self.path))
        off = 0
        while True:
            chunk = r.read(1 << 16)
            if not chunk:
                break
            if drop and off + len(chunk) > 40000:
                self.wfile.write(chunk[:40000 - off]); self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if flip and off <= 40000 < off + len(chunk):
                b = bytearray(chunk); b[40000 - off] ^= 0xFF; chunk = bytes(b)
            off += len(chunk)
            self.wfile.write(chunk)
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any
http.server.ThreadingHTTPServer((listen.split(":")[0], int(listen.split(":")[1])), H).serve_forever()
