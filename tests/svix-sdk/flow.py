"""Everyday Svix SDK calls against Hookgate's Svix-compatible API, unchanged but for the
server URL. Run by tests/svix.rs with HOOKGATE_URL and HOOKGATE_TOKEN (the admin token, Svix's
organisation token). A receiver in this process takes the deliveries and verifies each with the
SDK's own `Webhook` class. Prints "svix flow ok" when every check passed."""

import http.server
import json
import os
import queue
import threading

from svix.api import (
    ApplicationIn,
    EndpointIn,
    MessageIn,
    Svix,
    SvixOptions,
)
from svix.exceptions import HttpError
from svix.webhooks import Webhook

received = queue.Queue()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        received.put((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
receiver_url = f"http://127.0.0.1:{server.server_address[1]}/hook"

svix = Svix(os.environ["HOOKGATE_TOKEN"], SvixOptions(server_url=os.environ["HOOKGATE_URL"]))

app = svix.application.create(ApplicationIn(name="Acme", uid="acme", metadata={"plan": "pro"}))
assert app.uid == "acme" and app.name == "Acme" and app.metadata == {"plan": "pro"}, app
assert svix.application.get_or_create(ApplicationIn(name="Acme", uid="acme")).id == app.id
assert svix.application.get("acme").id == app.id
assert app.id in [a.id for a in svix.application.list().data]
generated = svix.application.create(ApplicationIn(name="No uid"))
assert generated.id.startswith("app_") and generated.uid is None, generated

ep = svix.endpoint.create(app.id, EndpointIn(url=receiver_url, event_types=["invoice.paid"]))
assert ep.url == receiver_url and ep.event_types == ["invoice.paid"] and ep.description == "", ep
assert ep.id in [e.id for e in svix.endpoint.list(app.id).data]
assert svix.endpoint.get(app.id, ep.id).id == ep.id
secret = svix.endpoint.get_secret(app.id, ep.id).key
assert secret.startswith("whsec_"), secret

payload = {"amount": 1200, "currency": "eur", "lines": [{"sku": "a-1", "qty": 2}]}
msg = svix.message.create(app.id, MessageIn(event_type="invoice.paid", payload=payload, event_id="evt_1"))
assert msg.id.startswith("msg_") and msg.event_type == "invoice.paid" and msg.payload == payload, msg
# A message type the endpoint does not take is not delivered to it.
svix.message.create(app.id, MessageIn(event_type="invoice.voided", payload={"n": 2}))

path, headers, body = received.get(timeout=15)
assert path == "/hook"
assert headers["svix-id"] == msg.id, headers
Webhook(secret).verify(body, headers)  # raises when the signature does not verify
assert json.loads(body) == payload, body
# The bytes the SDK sent (its key order, not sorted): delivered as they are.
assert body == json.dumps(payload, separators=(",", ":")).encode(), body
try:
    Webhook(secret).verify(body + b" ", headers)
    raise AssertionError("a changed body verified")
except AssertionError:
    raise
except Exception:
    pass

try:
    svix.message.create(app.id, MessageIn(event_type="invoice.paid", payload=payload, event_id="evt_1"))
    raise AssertionError("a repeated eventId was accepted")
except HttpError as e:
    assert e.status_code == 409, e

assert svix.message.get(app.id, msg.id).payload == payload
svix.endpoint.delete(app.id, ep.id)
try:
    svix.endpoint.get(app.id, ep.id)
    raise AssertionError("a deleted endpoint was found")
except HttpError as e:
    assert e.status_code == 404 and e.code == "not_found", e
svix.application.delete(generated.id)
assert received.empty(), "only the invoice.paid message was delivered"
print("svix flow ok")
