"""A file server on 127.0.0.1 for the download tests: real HTTP, with ``Range`` requests and
the ways real hosts misbehave (a dropped connection, a wrong length or checksum, the hub's
redirect of large files to its CDN)."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """One file the server offers, and how it misbehaves."""

    data: bytes
    lfs: bool = False  # answer with a redirect to /cdn/... carrying X-Linked-Etag, as the hub does
    sha256: str | None = None  # the sha256 to state, if not the true one
    extra_length: int = 0  # claim this many more bytes in Content-Length than are sent
    drop_first: bool = False  # close the connection halfway through the first answer
    content_md5: bool = False  # send Content-MD5 (base64), as Azure does


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path
        self.server.requests.append((path, self.headers.get("Range")))
        cdn = path.startswith("/cdn/")
        route = self.server.routes.get(path.removeprefix("/cdn"))
        if route is None:
            self.send_error(404, "Not Found")
            return
        sha256 = route.sha256 or hashlib.sha256(route.data).hexdigest()
        if route.lfs and not cdn:
            self.send_response(302)
            self.send_header("Location", "/cdn" + path)
            self.send_header("X-Linked-Etag", f'"{sha256}"')
            self.send_header("X-Linked-Size", str(len(route.data)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(path, route)

    def _send_file(self, path: str, route: Route) -> None:
        total, start = len(route.data), 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = route.data[start:]
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.send_header("Content-Length", str(len(body) + route.extra_length))
        # Small files on the hub carry a git blob sha1 (40 hex digits), not a sha256.
        self.send_header("ETag", f'"{hashlib.sha1(route.data).hexdigest()}"')
        if route.content_md5 and not match:
            self.send_header("Content-MD5", base64.b64encode(hashlib.md5(route.data).digest())
                             .decode())
        self.end_headers()
        first = sum(p == path for p, _ in self.server.requests) == 1
        if route.drop_first and first:
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class FileServer(ThreadingHTTPServer):
    def __init__(self, routes: dict[str, Route]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes = routes
        self.requests: list[tuple[str, str | None]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def file_servers() -> Iterator[Callable[[dict[str, Route]], FileServer]]:
    """``start(routes)`` serves ``{path: Route}`` from a thread; every server started is shut
    down on exit."""
    servers: list[FileServer] = []

    def start(routes: dict[str, Route]) -> FileServer:
        server = FileServer(routes)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
