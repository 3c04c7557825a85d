#!/usr/bin/env python3
"""A fake Hugging Face hub for olm's tests, on 127.0.0.1 only (stdlib only).

It serves the files named in a JSON config the way the real hub does:
  GET  /api/models/OWNER/REPO/tree/main    listing with sizes and LFS sha256
  HEAD|GET /OWNER/REPO/resolve/main/PATH   302 to /cdn/SHA256 with x-repo-commit,
                                           x-linked-etag and x-linked-size
  GET  /cdn/SHA256                         the bytes, honouring Range (206)
The config is re-read on every request, so a test can change the faults
while a pull runs:
  {"repos": {"owner/repo": {"files": {"name.gguf": "/path"}, "gated": false}},
   "faults": {"cut_after": N, "cut_times": K,   # first K body GETs end after N bytes
              "flip_byte": OFFSET,               # serve that byte inverted
              "status": {"tree"|"resolve"|"cdn": CODE}, "status_times": K,
              "rate": BYTES_PER_SECOND,          # throttle bodies
              "commit": "...", "etag": "...",    # hostile header values
              "extra_files": ["../../x"],        # hostile names in the listing
              "extra_entries": [{...}],          # raw entries added to the listing
              "linked_size": "...",              # x-linked-size sent by resolve
              "drip": {"tree"|"cdn": SECONDS},   # after drip_after bytes (default 0),
                                                 # one byte every SECONDS
              "ignore_range": true}}
Every request is appended to the log file as one JSON line.
Usage: fakehub.py CONFIG LOG  (prints the port on stdout, then serves).
"""
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFIG, LOG = sys.argv[1], sys.argv[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HASHES = {}
LOCK = threading.Lock()
COUNTERS = {}


def sha256_of(path):
    with LOCK:
        if path not in HASHES:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            HASHES[path] = digest.hexdigest()
        return HASHES[path]


def config():
    with open(CONFIG) as handle:
        return json.load(handle)


def count(key):
    with LOCK:
        COUNTERS[key] = COUNTERS.get(key, 0) + 1
        return COUNTERS[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def log_request_line(self):
        entry = {"method": self.command, "path": self.path,
                 "range": self.headers.get("Range"),
                 "authorization": self.headers.get("Authorization")}
        with LOCK, open(LOG, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def fail(self, code):
        body = json.dumps({"error": f"fake hub {code}"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if code == 429:
            self.send_header("Retry-After", "1")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def injected_status(self, faults, kind):
        code = faults.get("status", {}).get(kind)
        if code and count("status-" + kind) <= faults.get("status_times", 1 << 30):
            return code
        return None

    def repo(self, cfg, parts):
        name = "/".join(parts[:2])
        repo = cfg["repos"].get(name)
        if repo and repo.get("gated") and self.headers.get("Authorization") != "Bearer secret-token":
            self.fail(401)
            return None
        if repo is None:
            self.fail(404)
        return repo

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.log_request_line()
        cfg = config()
        faults = cfg.get("faults", {})
        path = self.path.split("?")[0]
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "models"] and parts[4:6] == ["tree", "main"]:
            return self.tree(cfg, faults, parts[2:4])
        if len(parts) > 4 and parts[2:4] == ["resolve", "main"]:
            return self.resolve(cfg, faults, parts[:2], "/".join(parts[4:]))
        if len(parts) == 2 and parts[0] == "cdn":
            return self.cdn(cfg, faults, parts[1])
        self.fail(404)

    def tree(self, cfg, faults, repo_parts):
        code = self.injected_status(faults, "tree")
        if code:
            return self.fail(code)
        repo = self.repo(cfg, repo_parts)
        if repo is None:
            return
        entries = []
        for name, path in repo["files"].items():
            size = os.path.getsize(path)
            entries.append({"type": "file", "path": name, "size": size, "oid": "f" * 40,
                            "lfs": {"oid": sha256_of(path), "size": size, "pointerSize": 134}})
        for name in faults.get("extra_files", []):
            entries.append({"type": "file", "path": name, "size": 1, "oid": "e" * 40})
        entries.extend(faults.get("extra_entries", []))
        body = json.dumps(entries).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if "tree" in faults.get("drip", {}):
            return self.drip(body, faults["drip"]["tree"])
        self.wfile.write(body)

    def drip(self, body, seconds):
        """One byte every `seconds`: never silent long enough to be a stall."""
        for index in range(len(body)):
            try:
                self.wfile.write(body[index:index + 1])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            time.sleep(seconds)

    def resolve(self, cfg, faults, repo_parts, name):
        code = self.injected_status(faults, "resolve")
        if code:
            return self.fail(code)
        repo = self.repo(cfg, repo_parts)
        if repo is None:
            return
        path = repo["files"].get(name)
        if path is None:
            return self.fail(404)
        sha = faults.get("etag", sha256_of(path))
        self.send_response(302)
        location = f"/cdn/{sha256_of(path)}"
        if faults.get("cdn_host"):
            # An absolute redirect to another host name, as the real hub's CDN.
            location = f"http://{faults['cdn_host']}:{self.server.server_address[1]}{location}"
        self.send_header("Location", location)
        self.send_header("x-repo-commit", faults.get("commit", COMMIT))
        self.send_header("x-linked-etag", f'"{sha}"')
        self.send_header("x-linked-size", faults.get("linked_size", str(os.path.getsize(path))))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def cdn(self, cfg, faults, sha):
        code = self.injected_status(faults, "cdn")
        if code:
            return self.fail(code)
        path = next((p for repo in cfg["repos"].values() for p in repo["files"].values()
                     if sha256_of(p) == sha), None)
        if path is None:
            return self.fail(404)
        size = os.path.getsize(path)
        start, end = 0, size - 1
        ranged = self.headers.get("Range")
        if ranged and not faults.get("ignore_range"):
            first, _, last = ranged.replace("bytes=", "").partition("-")
            start = int(first)
            end = int(last) if last else size - 1
            if start >= size:
                return self.fail(416)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        length = end - start + 1
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.command == "HEAD":
            return
        limit = length
        if "cut_after" in faults and count("cut") <= faults.get("cut_times", 1):
            limit = min(length, faults["cut_after"])
        stall_at = None
        if "stall_after" in faults and count("stall") <= faults.get("stall_times", 1):
            stall_at = faults["stall_after"]
        if "cdn" in faults.get("drip", {}):
            after = faults.get("drip_after", 0)
            with open(path, "rb") as handle:
                handle.seek(start)
                body = handle.read(limit)
            try:
                self.wfile.write(body[:after])
            except (BrokenPipeError, ConnectionResetError):
                return
            self.close_connection = True
            return self.drip(body[after:], faults["drip"]["cdn"])
        self.send_body(path, start, limit, faults, stall_at)
        if limit < length:
            self.close_connection = True

    def send_body(self, path, start, limit, faults, stall_at=None):
        """Send [start, start+limit); with stall_at, go silent after that many
        bytes (the connection stays open, as a stuck server's would)."""
        rate = faults.get("rate")
        flip = faults.get("flip_byte")
        with open(path, "rb") as handle:
            handle.seek(start)
            sent = 0
            while sent < limit:
                chunk = handle.read(min(1 << 16, limit - sent))
                if not chunk:
                    break
                if flip is not None and start + sent <= flip < start + sent + len(chunk):
                    index = flip - start - sent
                    chunk = chunk[:index] + bytes([chunk[index] ^ 0xFF]) + chunk[index + 1:]
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(chunk)
                if stall_at is not None and sent >= stall_at:
                    time.sleep(faults.get("stall_seconds", 30))
                    return
                if rate:
                    time.sleep(len(chunk) / rate)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    # Stop on our own after a while so a crashed test never leaves us behind.
    threading.Timer(float(os.environ.get("FAKEHUB_LIFETIME", "600")), server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
