#!/usr/bin/env python3
"""A fake ModelScope hub for olm's tests, on 127.0.0.1 only (stdlib only).

It answers the requests the `modelscope` client (modelscope 1.40.2 /
modelscope-hub 0.5.1) makes to download a model, in the shapes the real hub
uses, so that the real client downloads from it too (tests/it/modelscope.rs
checks that, bytes verified):
  GET /api/v1/models/OWNER/NAME/repo/files?Revision=master&Recursive=True[&Root=DIR]
      {"Code": 200, "Data": {"Files": [{"Name", "Path", "Type", "Size",
      "Sha256", "IsLFS", "Revision", ...}]}, "Success": true}; at most 3000
      entries, cut without a word (as the real server); Recursive=False lists
      one level
  GET /api/v1/models/OWNER/NAME/repo?Revision=master&FilePath=PATH
      a .gguf (an LFS object) redirects (302) to object storage,
      /oss/SHA256?Expires=..&Signature=.., which honours Range (206); any
      other file comes back here, 200 with the whole body, Range ignored
  GET /api/v1/models/OWNER/NAME       repo info
Errors as the real hub gives them: 401 without a (valid) token for a private
repo, 403 when the token has no access, 404 for a missing repo or file, with
a JSON body {"Code", "Message", "RequestId", "Success": false}. The token is
taken from `Authorization: Bearer` or the `m_session_id` cookie (the client
sends both).

The config is re-read on every request, so a test can change faults while a
pull runs:
  {"token": "secret-ms-token",
   "repos": {"owner/name": {"files": {"path/in/repo.gguf": "/local/path"},
                            "private": false, "denied": false,
                            "virtual": {"folder": N}}},   # N listed-only files
   "faults": {"cut_after": N, "cut_times": K,  # first K object GETs end after N bytes
              "flip_byte": OFFSET,              # serve that byte inverted
              "status": {"files"|"repo"|"oss": CODE}, "status_times": K,
              "rate": BYTES_PER_SECOND, "stall_after": N, "stall_seconds": S,
              "sha256": "...", "size": N,       # hostile listing values
              "extra_files": ["../../x.gguf"],  # hostile names in the listing
              "oss_host": "localhost",          # redirect to another host name
              "listing_body": "...",            # a malformed listing, as is
              "listing_endless": true,          # a listing that never ends
              "ignore_range": true}}
Every request is appended to the log file as one JSON line.
Usage: fake_modelscope.py CONFIG LOG  (prints the port on stdout, then serves).
"""
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

CONFIG, LOG = sys.argv[1], sys.argv[2]
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
LISTING_LIMIT = 3000
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
                 "authorization": self.headers.get("Authorization"),
                 "cookie": self.headers.get("Cookie"),
                 "host": self.headers.get("Host")}
        with LOCK, open(LOG, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def send_json(self, code, body, extra=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", uuid.uuid4().hex)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def fail(self, code, message=None):
        extra = {"Retry-After": "1"} if code == 429 else None
        self.send_json(code, {"Code": code, "Message": message or f"fake modelscope {code}",
                              "RequestId": uuid.uuid4().hex, "Success": False}, extra)

    def injected_status(self, faults, kind):
        code = faults.get("status", {}).get(kind)
        if code and count("status-" + kind) <= faults.get("status_times", 1 << 30):
            return code
        return None

    def token(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer "):]
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "m_session_id":
                return value
        return None

    def repo(self, cfg, owner, name):
        """The repo's config, or None after answering 404/401/403."""
        repo = cfg["repos"].get(f"{owner}/{name}")
        if repo is None:
            self.fail(404, f"model {owner}/{name} not found")
            return None
        if repo.get("private") and self.token() != cfg.get("token"):
            self.fail(401, "login required for this private model")
            return None
        if repo.get("denied"):
            self.fail(403, "no permission for this model")
            return None
        return repo

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.log_request_line()
        cfg = config()
        faults = cfg.get("faults", {})
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        if parts[:3] == ["api", "v1", "models"] and len(parts) == 7 and parts[5:] == ["repo", "files"]:
            return self.listing(cfg, faults, parts[3], parts[4], query)
        if parts[:3] == ["api", "v1", "models"] and len(parts) == 6 and parts[5] == "repo":
            return self.download(cfg, faults, parts[3], parts[4], query)
        if parts[:3] == ["api", "v1", "models"] and len(parts) == 5:
            repo = self.repo(cfg, parts[3], parts[4])
            if repo is not None:
                self.send_json(200, {"Code": 200, "Data": {
                    "Name": parts[4], "Path": parts[3], "Private": bool(repo.get("private")),
                    "Revision": COMMIT}, "Success": True})
            return None
        if len(parts) == 2 and parts[0] == "oss":
            return self.oss(cfg, faults, parts[1])
        self.fail(404)

    def entries(self, cfg, faults, repo):
        """Every file and folder of the repo, as the listing gives them."""
        files = {}
        for path, local in repo["files"].items():
            size = faults.get("size", os.path.getsize(local))
            files[path] = {"size": size, "sha": faults.get("sha256", sha256_of(local)), "lfs": path.endswith(".gguf")}
        for folder, number in repo.get("virtual", {}).items():
            for index in range(number):
                files[f"{folder}/f{index:05d}.txt"] = {"size": 1, "sha": "", "lfs": False}
        for path in faults.get("extra_files", []):
            files[path] = {"size": 1, "sha": "", "lfs": False}
        folders = set()
        for path in files:
            pieces = path.split("/")[:-1]
            for depth in range(1, len(pieces) + 1):
                folders.add("/".join(pieces[:depth]))
        entries = []
        for path in sorted(set(files) | folders):
            base = {"Name": path.rsplit("/", 1)[-1], "Path": path, "Revision": COMMIT,
                    "CommitMessage": "upload", "CommittedDate": 1730000000,
                    "CommitterName": "fake", "Id": hashlib.sha1(path.encode()).hexdigest()}
            if path in folders:
                base.update({"Type": "tree", "Mode": "40000", "Size": 0, "Sha256": "", "IsLFS": False})
            else:
                item = files[path]
                base.update({"Type": "blob", "Mode": "100644", "Size": item["size"],
                             "Sha256": item["sha"], "IsLFS": item["lfs"]})
            entries.append(base)
        return entries

    def listing(self, cfg, faults, owner, name, query):
        code = self.injected_status(faults, "files")
        if code:
            return self.fail(code)
        repo = self.repo(cfg, owner, name)
        if repo is None:
            return None
        if "listing_body" in faults:
            data = faults["listing_body"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        if faults.get("listing_endless"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.close_connection = True
            try:
                self.wfile.write(b'{"Data": {"Files": [')
                while True:
                    self.wfile.write(b'{"Path": "a.txt", "Size": 1},' * 1000)
            except (BrokenPipeError, ConnectionResetError):
                return None
        root = query.get("Root", "").strip("/")
        recursive = query.get("Recursive", "False") == "True"
        chosen = []
        for entry in self.entries(cfg, faults, repo):
            path = entry["Path"]
            if root and not path.startswith(root + "/"):
                continue
            rest = path[len(root) + 1:] if root else path
            if not recursive and "/" in rest:
                continue
            chosen.append(entry)
        # The real server stops at its limit without saying so.
        chosen = chosen[:LISTING_LIMIT]
        self.send_json(200, {"Code": 200, "Data": {"Files": chosen, "IsVisual": 0},
                             "Message": "success", "RequestId": uuid.uuid4().hex, "Success": True})
        return None

    def download(self, cfg, faults, owner, name, query):
        code = self.injected_status(faults, "repo")
        if code:
            return self.fail(code)
        repo = self.repo(cfg, owner, name)
        if repo is None:
            return None
        path = query.get("FilePath", "")
        local = repo["files"].get(path)
        if local is None:
            return self.fail(404, f"file {path} not found")
        if path.endswith(".gguf"):
            # LFS objects live in object storage: a signed, expiring URL.
            host = faults.get("oss_host")
            prefix = f"http://{host}:{self.server.server_address[1]}" if host else ""
            location = (f"{prefix}/oss/{sha256_of(local)}?Expires={int(time.time()) + 3600}"
                        f"&OSSAccessKeyId=fake&Signature={quote(uuid.uuid4().hex)}")
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        # Small files come from the hub itself, whole, whatever Range says.
        size = os.path.getsize(local)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command != "HEAD":
            with open(local, "rb") as handle:
                self.wfile.write(handle.read())
        return None

    def oss(self, cfg, faults, sha):
        code = self.injected_status(faults, "oss")
        if code:
            return self.fail(code)
        local = next((p for repo in cfg["repos"].values() for p in repo["files"].values()
                      if sha256_of(p) == sha), None)
        if local is None:
            return self.fail(404)
        size = os.path.getsize(local)
        start, end = 0, size - 1
        ranged = self.headers.get("Range")
        if ranged and not faults.get("ignore_range"):
            first, _, last = ranged.replace("bytes=", "").partition("-")
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        length = end - start + 1
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha[:32].upper()}"')
        self.send_header("x-oss-request-id", uuid.uuid4().hex[:24].upper())
        self.end_headers()
        if self.command == "HEAD":
            return None
        limit = length
        if "cut_after" in faults and count("cut") <= faults.get("cut_times", 1):
            limit = min(length, faults["cut_after"])
        stall_at = None
        if "stall_after" in faults and count("stall") <= faults.get("stall_times", 1):
            stall_at = faults["stall_after"]
        self.send_body(local, start, limit, faults, stall_at)
        if limit < length:
            self.close_connection = True
        return None

    def send_body(self, path, start, limit, faults, stall_at=None):
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
