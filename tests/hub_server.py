"""A loopback Hugging Face Hub for tests: the part of the Hub HTTP API that ``push_to_hub`` / ``create_commit`` /
``upload_folder`` and ``from_pretrained`` / ``hf_hub_download`` / ``snapshot_download`` use, served in memory by a
stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) from a background thread.

Endpoints (model repos only; repo ids are always ``namespace/name``):

    POST /api/repos/create                          {"name", "organization"} -> {"url"}; 409 (+ "url") if it exists
    POST /api/validate-yaml                         {"content"} -> {"errors": [], "warnings": []}; 400 on bad YAML
    POST /api/models/{repo}/preupload/{rev}         {"files": [...]} -> every file "regular" (content travels inline)
    POST /api/models/{repo}/commit/{rev}            ndjson: header, file (base64), deletedFile, deletedFolder
    POST /api/models/{repo}/branch/{branch}         {"startingPoint"?} -> new branch; 409 if it exists
    GET  /api/models/{repo}[/revision/{rev}]        {"id", "sha", "siblings": [{"rfilename"}], ...}
    GET  /api/models/{repo}/refs                    {"branches": [{"name", "ref", "targetCommit"}], ...}
    GET  /api/models/{repo}/tree/{rev}[/{path}]     [{"type": "file"|"directory", "path", "oid", "size"}], ?recursive
    HEAD|GET /{repo}/resolve/{rev}/{path}           bytes + X-Repo-Commit, ETag (git blob sha1), Content-Length

Errors carry the headers the client dispatches on (``X-Error-Code``: RepoNotFound, RevisionNotFound,
EntryNotFound) and a JSON body ``{"error": ...}``. Each commit gets a fresh 40-hex sha; ``refs`` maps branch -> sha;
a commit snapshot is a dict path -> bytes. No LFS/Xet: preupload always answers "regular". ``HubServer.requests``
records ``(method, path)`` of every call, so a test can see what the client did.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_COUNTER = itertools.count()


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob: what the Hub uses as oid / ETag of a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An HTTP error as the Hub sends it: status, X-Error-Code (what the client dispatches on), JSON body."""

    def __init__(self, status: int, message: str, code: str | None = None, headers=None, **body):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}
        self.body = {"error": message, **body}


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: bytes}
    refs: dict[str, str] = field(default_factory=dict)  # branch -> sha
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (sha, branch, message), oldest first

    def resolve(self, revision: str) -> str:
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def commit(self, branch: str, files: dict[str, bytes], message: str) -> str:
        sha = hashlib.sha1(f"{self.repo_id}\0{branch}\0{message}\0{next(_COUNTER)}".encode()).hexdigest()
        self.commits[sha] = files
        self.refs[branch] = sha
        self.log.append((sha, branch, message))
        return sha


class HubState:
    """All repositories, behind one lock (the server handles requests on several threads)."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()

    def get(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return self.repos[repo_id]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: _Server

    def log_message(self, *args):  # quiet: tests read HubServer.requests instead
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(
        self, status: int, body: bytes | dict | list = b"", headers: dict | None = None, head: bool = False
    ):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _dispatch(self, method: str):
        url = urlsplit(self.path)
        self.server.requests.append((method, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            with self.server.state.lock:
                status, body, headers = self._route(method, parts, raw, query)
        except HubError as e:
            headers = dict(e.headers)
            if e.code:
                headers.update({"X-Error-Code": e.code, "X-Error-Message": str(e)})
            self._send(e.status, e.body, headers, head=method == "HEAD")
            return
        except Exception as e:  # a malformed request: answer instead of dropping the connection
            self._send(500, {"error": f"{type(e).__name__}: {e}"}, head=method == "HEAD")
            return
        self._send(status, body, headers, head=method == "HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    # ------------------------------------------------------------------ routes
    def _route(self, method, parts, raw, query):
        state, endpoint = self.server.state, self.server.endpoint
        if parts[:1] == ["api"]:
            if method == "POST" and parts[1:] == ["repos", "create"]:
                return self._create_repo(json.loads(raw or b"{}"))
            if method == "POST" and parts[1:] == ["validate-yaml"]:
                return self._validate_yaml(json.loads(raw or b"{}"))
            if parts[1:2] != ["models"] or len(parts) < 4:
                raise HubError(404, f"Unknown endpoint /{'/'.join(parts)}")
            repo = state.get(f"{parts[2]}/{parts[3]}")
            action, rest = (parts[4], parts[5:]) if len(parts) > 4 else (None, [])
            if method == "GET" and action in (None, "revision"):
                return self._info(repo, rest[0] if rest else "main")
            if method == "GET" and action == "refs":
                branches = [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in repo.refs.items()
                ]
                return 200, {"branches": branches, "converts": [], "tags": []}, {}
            if method == "GET" and action == "tree" and rest:
                return self._tree(
                    repo, rest[0], "/".join(rest[1:]), query.get("recursive") in ("true", "True", "1")
                )
            if method == "POST" and action == "preupload" and rest:
                return self._preupload(repo, rest[0], json.loads(raw))
            if method == "POST" and action == "commit" and rest:
                return self._commit(repo, rest[0], raw, endpoint)
            if method == "POST" and action == "branch" and rest:
                return self._branch(repo, rest[0], json.loads(raw or b"{}"))
            raise HubError(404, f"Unknown endpoint {method} /{'/'.join(parts)}")
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(state.get(f"{parts[0]}/{parts[1]}"), parts[3], "/".join(parts[4:]))
        raise HubError(404, f"Unknown endpoint {method} /{'/'.join(parts)}")

    def _create_repo(self, payload):
        if payload.get("type", "model") not in (None, "model"):
            raise HubError(400, "This test Hub only hosts model repos")
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        url = f"{self.server.endpoint}/{repo_id}"
        state = self.server.state
        if repo_id in state.repos:
            raise HubError(409, "You already created this model repo", url=url)
        repo = state.repos[repo_id] = Repo(
            repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private"))
        )
        repo.commit("main", {".gitattributes": b""}, "initial commit")
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def _validate_yaml(self, payload):
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", payload.get("content", ""), re.DOTALL)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as e:
            raise HubError(400, "Invalid YAML", errors=[{"message": f"invalid YAML: {e}"}]) from e
        if meta is not None and not isinstance(meta, dict):
            raise HubError(400, "Invalid metadata", errors=[{"message": "metadata must be a mapping"}])
        return 200, {"errors": [], "warnings": []}, {}

    def _info(self, repo: Repo, revision: str):
        sha = repo.resolve(revision)
        files = sorted(repo.commits[sha])
        body = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": repo.private,
                "siblings": [{"rfilename": p} for p in files], "tags": []}  # fmt: skip
        return 200, body, {}

    def _tree(self, repo: Repo, revision: str, path: str, recursive: bool):
        files = repo.commits[repo.resolve(revision)]
        prefix = f"{path}/" if path else ""
        if path and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        entries, folders = [], set()
        for p in sorted(files):
            if not p.startswith(prefix):
                continue
            tail = p[len(prefix) :].split("/")
            for depth in range(1, len(tail) if recursive else min(2, len(tail))):
                folders.add(prefix + "/".join(tail[:depth]))
            if recursive or len(tail) == 1:
                entries.append(
                    {"type": "file", "path": p, "oid": git_blob_sha(files[p]), "size": len(files[p])}
                )
        dirs = [
            {"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0}
            for d in folders
        ]
        return 200, sorted(dirs + entries, key=lambda e: e["path"]), {}

    def _preupload(self, repo: Repo, revision: str, payload):
        files = repo.commits[repo.resolve(revision)]
        answer = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None}
            for f in payload["files"]
        ]  # fmt: skip
        return 200, {"files": answer}, {}

    def _commit(self, repo: Repo, branch: str, raw: bytes, endpoint: str):
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        parent = repo.resolve(branch)  # committing needs an existing branch, as on the Hub
        if header.get("parentCommit") and header["parentCommit"] != parent:
            raise HubError(412, f"A commit has happened since {header['parentCommit']}; the head is {parent}")
        files = dict(repo.commits[parent])
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(
                        404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound"
                    )
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(folder)}
            else:
                raise HubError(400, f"Unsupported commit operation {key!r} (this test Hub has no LFS)")
        sha = repo.commit(branch, files, header.get("summary", ""))
        return (
            200,
            {"commitUrl": f"{endpoint}/{repo.repo_id}/commit/{sha}", "commitOid": sha, "success": True},
            {},
        )

    def _branch(self, repo: Repo, branch: str, payload):
        if branch in repo.refs:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.refs[branch] = repo.resolve(payload.get("startingPoint") or "main")
        return 200, {}, {}

    def _resolve(self, repo: Repo, revision: str, path: str):
        sha = repo.resolve(revision)
        files = repo.commits[sha]
        if path not in files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        data = files[path]
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{git_blob_sha(data)}"',
            "Content-Type": "application/octet-stream",
        }
        return 200, data, headers


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState
    endpoint: str
    requests: list


class HubServer:
    """``with HubServer() as hub: ...`` -> a running loopback Hub at ``hub.endpoint`` (``http://127.0.0.1:PORT``)."""

    def __init__(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state, self._server.requests = HubState(), []
        self.endpoint = self._server.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> HubState:
        return self._server.state

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self._server.requests

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The snapshot of ``repo_id`` at ``revision`` (path -> bytes), for assertions."""
        with self.state.lock:
            repo = self.state.get(repo_id)
            return dict(repo.commits[repo.resolve(revision)])
