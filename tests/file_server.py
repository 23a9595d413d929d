"""A file server on 127.0.0.1 for the download tests: real HTTP, with ``Range`` requests and
the ways real hosts misbehave (a dropped connection, a wrong length or checksum, the hub's
redirect of large files to its CDN). :class:`HubServer` answers as the Hugging Face hub does:
its API's listing, ``resolve`` URLs that redirect LFS files to a CDN on another port, gated
repositories and the hub's ``X-Error-Code``."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Route:
    """One file the server offers, and how it misbehaves."""

    data: bytes
    lfs: bool = False  # answer with a redirect to /cdn/... carrying X-Linked-Etag, as the hub does
    sha256: str | None = None  # the sha256 to state, if not the true one
    extra_length: int = 0  # claim this many more bytes in Content-Length than are sent
    drop_first: bool = False  # close the connection halfway through the first answer
    content_md5: bool = False  # send Content-MD5 (base64), as Azure does
    etag: str | None = None  # the ETag to send, if not the sha1 of the data


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path
        self.server.requests.append((path, self.headers.get("Range")))
        self.server.authorizations.append((path, self.headers.get("Authorization")))
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
        self.send_header("ETag", f'"{route.etag or hashlib.sha1(route.data).hexdigest()}"')
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
    def __init__(self, routes: dict[str, Route], handler: type[Handler] = Handler) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.routes = routes
        self.requests: list[tuple[str, str | None]] = []
        self.authorizations: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


def git_blob_id(data: bytes) -> str:
    """The id git (and the hub's ``blobId``) gives ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    """One repository on the :class:`HubServer`: its files by name (a ``Route`` with
    ``lfs=True`` is redirected to the CDN and listed with its sha256), the revisions it has,
    and, for a gated one, the one token that may read it."""

    files: dict[str, Route]
    revisions: tuple[str, ...] = ("main",)
    token: str | None = None  # gated: 401 without a token, 403 with another one
    commit: str = "c0ffee" * 6 + "c0ff"  # 40 hex digits: what every revision resolves to
    listed_as: dict[str, bytes] = field(default_factory=dict)  # a file's content as the listing
    # describes it, where the one served differs (a corrupted copy)


class HubHandler(Handler):
    """``GET /api/models/ORG/NAME/revision/REV``: the listing; ``GET /ORG/NAME/resolve/REV/FILE``:
    the file, or for an LFS file a 302 to ``CDN/lfs/SHA256`` with ``X-Linked-Etag``,
    ``X-Linked-Size`` and ``X-Repo-Commit``, as huggingface.co answers."""

    server: HubServer

    def do_GET(self) -> None:  # noqa: N802
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append((self.path, self.headers.get("Range")))
        self.server.authorizations.append((self.path, self.headers.get("Authorization")))
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        match = api or resolve
        repo = self.server.repos.get(match.group(1)) if match else None
        if repo is None:
            return self._error(401 if match else 404, "RepoNotFound", "Repository not found")
        if resolve:  # a gated repository's listing is public, its files are not
            refused = self._refused(repo)
            if refused:
                return self._error(refused, "GatedRepo", "Access to this model is restricted")
        assert match is not None
        if match.group(2) not in repo.revisions + (repo.commit,):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {match.group(2)}")
        if api:
            return self._send_json(self._listing(match.group(1), repo))
        route = repo.files.get(match.group(3))
        if route is None:
            return self._error(404, "EntryNotFound", "Entry not found")
        sha256 = route.sha256 or hashlib.sha256(route.data).hexdigest()
        if route.lfs:
            self.send_response(302)
            self.send_header("Location", f"{self.server.cdn.url}/lfs/{sha256}")
            self.send_header("X-Linked-Etag", f'"{sha256}"')
            self.send_header("X-Linked-Size", str(len(route.data)))
            self.send_header("ETag", f'"{sha256}"')
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(self.path, Route(route.data, extra_length=route.extra_length,
                                         drop_first=route.drop_first,
                                         etag=git_blob_id(route.data)))

    def _refused(self, repo: HubRepo) -> int | None:
        if repo.token is None:
            return None
        given = self.headers.get("Authorization")
        if given is None:
            return 401
        return None if given == f"Bearer {repo.token}" else 403

    def _listing(self, name: str, repo: HubRepo) -> dict[str, object]:
        siblings: list[dict[str, object]] = []
        for file, route in repo.files.items():
            data = repo.listed_as.get(file, route.data)
            entry: dict[str, object] = {"rfilename": file, "size": len(data),
                                        "blobId": git_blob_id(data)}
            if route.lfs:
                pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:"
                           f"{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n")
                entry["blobId"] = git_blob_id(pointer.encode())
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                "size": len(data), "pointerSize": len(pointer)}
            siblings.append(entry)
        return {"_id": "0" * 24, "id": name, "modelId": name, "sha": repo.commit,
                "private": False, "gated": "manual" if repo.token else False,
                "disabled": False, "siblings": siblings}

    def _send_json(self, data: object) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HubServer(FileServer):
    """The hub on one loopback port, its CDN (a plain :class:`FileServer` serving each LFS
    file at ``/lfs/SHA256``) on another: a redirect to the CDN changes host."""

    def __init__(self, repos: dict[str, HubRepo], cdn: FileServer) -> None:
        super().__init__({}, HubHandler)
        self.repos, self.cdn = repos, cdn


def cdn_routes(repos: dict[str, HubRepo]) -> dict[str, Route]:
    """The CDN's routes for every LFS file of ``repos``, misbehaving as the file's route says
    (its ``data`` may differ from what the listing states, to corrupt it)."""
    return {f"/lfs/{hashlib.sha256(route.data).hexdigest()}": replace(route, lfs=False)
            for repo in repos.values() for route in repo.files.values() if route.lfs}


@contextmanager
def file_servers() -> Iterator[Callable[[dict[str, Route]], FileServer]]:
    """``start(routes)`` serves ``{path: Route}`` from a thread; every server started is shut
    down on exit."""
    servers: list[FileServer] = []

    def start(routes: dict[str, Route]) -> FileServer:
        return _serve(FileServer(routes), servers)

    try:
        yield start
    finally:
        _shut_down(servers)


def _shut_down(servers: list[FileServer]) -> None:
    for server in servers:
        server.shutdown()
        server.server_close()


def _serve(server: FileServer, servers: list[FileServer]) -> FileServer:
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    servers.append(server)
    return server


@contextmanager
def hub_servers() -> Iterator[Callable[..., HubServer]]:
    """``start(repos, cdn_files=None)`` serves ``{"ORG/NAME": HubRepo}`` as the hub does, with
    its CDN on another port (serving ``cdn_files``, by default each LFS file's route); every
    server is shut down on exit."""
    servers: list[FileServer] = []

    def start(repos: dict[str, HubRepo],
              cdn_files: dict[str, Route] | None = None) -> HubServer:
        cdn = _serve(FileServer(cdn_routes(repos) if cdn_files is None else cdn_files),
                     servers)
        hub = HubServer(repos, cdn)
        _serve(hub, servers)
        return hub

    try:
        yield start
    finally:
        _shut_down(servers)
