"""A small webhook receiver for the demo: prints every message that arrives."""
import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        auth = self.headers.get("authorization", "")
        shown = auth[:12] + "…" if auth else "(none)"
        try:
            text = json.loads(body)
        except ValueError:
            text = body.decode(errors="replace")
        # The demo's load during the live reload is counted by the driver, not printed here.
        if b"under reload" not in body:
            print(f"receiver: {self.path} got {json.dumps(text)} "
                  f"(authorization {shown}, idempotency-key {self.headers.get('idempotency-key')})",
                  flush=True)
        reply = json.dumps({"ok": True, "id": f"msg-{self.path.strip('/')}-1"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print(f"receiver: listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
