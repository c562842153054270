"""A stand-in for the webapp on a free loopback port, for the exporter's tests: GET answers the card (the
exporter reads /model), POST /predict and POST /feedback answer what a subclass's predict() and feedback()
return, one JSON document each."""
import http.server
import json
import threading


class FakeApi:
    def __init__(self, card: dict):
        self.card = card
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, document):
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.reply(200, api.card)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.reply(*(api.predict(self.headers, body) if self.path == "/predict" else api.feedback(body)))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def predict(self, headers, body) -> tuple:
        """(status, document) for a POST /predict."""
        raise NotImplementedError

    def feedback(self, body) -> tuple:
        """(status, document) for a POST /feedback."""
        raise NotImplementedError

    def close(self):
        self.server.shutdown()
        self.server.server_close()
