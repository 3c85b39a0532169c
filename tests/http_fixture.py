"""A loopback HTTP file server for the download tests: serves a folder, honours ``Range``, and can misbehave.

``FileServer(root).mode`` decides what the next responses do: ``ok`` (the file, or the asked range with 206),
``no-range`` (ignores Range, always 200 + the whole file), ``truncated`` (a complete response that carries only the
first half of the file), ``interrupted`` (announces the full length, sends half and closes the connection),
``corrupt`` (the full length with one byte changed). ``requests`` records ``(path, Range header)`` of every request.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    """Serve ``root`` on 127.0.0.1 (a free port) in a daemon thread; use as a context manager."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.mode = "ok"
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                return

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                path = server.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404, "not found")
                    return
                data = path.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng and server.mode not in ("no-range",) and rng.startswith("bytes="):
                    start = int(rng[len("bytes="):].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                body = data[start:]
                if server.mode == "corrupt":
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                if server.mode == "truncated":
                    body = body[: len(body) // 2]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "interrupted":
                    self.wfile.write(body[: max(1, len(body) // 2)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the server (no trailing slash)."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FileServer:  # noqa: PYI034 -- a plain class, no subclass needs Self
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
