"""A tiny HTTP proxy in front of the real registry that can inject faults or demand tokens.

It forwards every request to the registry unchanged (Host kept, so upload Locations point
back at the proxy) unless a rule answers first. Rules see (method, path) and may return
(status, headers, body). ``rewrite_location`` may change the ``Location`` the registry
answers (to send the client to another server). The proxy records every request it saw,
with its headers.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

Answer = tuple[int, dict[str, str], bytes]
Rule = Callable[[str, str, dict[str, str]], Answer | None]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Seen:
    method: str
    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RegistryProxy:
    upstream: str  # "127.0.0.1:PORT"
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    host: str = ""
    rewrite_location: Callable[[str], str] | None = None
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                headers = {key: value for key, value in self.headers.items()}
                for rule in proxy.rules:
                    answer = rule(self.command, self.path, headers)
                    if answer is not None:
                        proxy.seen.append(Seen(self.command, self.path, answer[0], headers))
                        self._answer(*answer)
                        return
                forwarded = {
                    key: value
                    for key, value in headers.items()
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "authorization"
                }
                response = requests.request(
                    self.command,
                    f"http://{proxy.upstream}{self.path}",
                    headers=forwarded,
                    data=body if body else None,
                    allow_redirects=False,
                    timeout=60,
                )
                proxy.seen.append(Seen(self.command, self.path, response.status_code, headers))
                answer_headers = dict(response.headers)
                if proxy.rewrite_location is not None and "Location" in answer_headers:
                    answer_headers["Location"] = proxy.rewrite_location(answer_headers["Location"])
                self._answer(response.status_code, answer_headers, response.content)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def count(self, method: str, path_part: str, status: int | None = None) -> int:
        return sum(
            1
            for seen in self.seen
            if seen.method == method
            and path_part in seen.path
            and (status is None or seen.status == status)
        )


def fail_n_times(method: str, path_part: str, times: int, status: int = 500) -> Rule:
    """A rule answering status to the first `times` matching requests."""
    left = [times]

    def rule(seen_method: str, path: str, headers: dict[str, str]) -> Answer | None:
        if seen_method == method and path_part in path and left[0] > 0:
            left[0] -= 1
            return status, {"Content-Type": "text/plain"}, b"injected failure"
        return None

    return rule


@dataclass
class TokenGate:
    """Makes the proxy a token-authenticated registry: /v2/ needs a bearer token that
    /token hands out for the right basic credentials."""

    username: str
    password: str
    token: str = "token-for-tests"
    requested_scopes: list[str] = field(default_factory=list)
    proxy_host: str = ""

    def rule(self, method: str, path: str, headers: dict[str, str]) -> Answer | None:
        if path.startswith("/token"):
            query = parse_qs(urlsplit(path).query)
            self.requested_scopes.extend(query.get("scope", []))
            expected = (
                "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            )
            if headers.get("Authorization") != expected:
                return 401, {"Content-Type": "application/json"}, b'{"errors":"bad credentials"}'
            return (
                200,
                {"Content-Type": "application/json"},
                b'{"token": "%s"}' % self.token.encode(),
            )
        if headers.get("Authorization") == f"Bearer {self.token}":
            return None
        challenge = f'Bearer realm="http://{self.proxy_host}/token",service="fnjob-tests"'
        return 401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, b"{}"


@dataclass
class BasicGate:
    """Makes the proxy a registry that demands HTTP basic credentials on every request."""

    username: str
    password: str

    def rule(self, method: str, path: str, headers: dict[str, str]) -> Answer | None:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if headers.get("Authorization") == expected:
            return None
        challenge = 'Basic realm="fnjob-tests"'
        return 401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, b"{}"
