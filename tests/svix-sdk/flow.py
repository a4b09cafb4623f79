"""Everyday Svix SDK calls against Hookgate's Svix-compatible API, unchanged but for the
server URL. Run by tests/svix.rs with HOOKGATE_URL and HOOKGATE_TOKEN (the admin token, Svix's
organisation token). A receiver in this process takes the deliveries and verifies each with the
SDK's own `Webhook` class. Prints "svix flow ok" when every check passed."""

import http.server
import json
import os
import queue
import threading
import time

from svix.api import (
    AppPortalAccessIn,
    ApplicationIn,
    ApplicationPatch,
    EndpointHeadersPatchIn,
    EndpointIn,
    EndpointPatch,
    EndpointUpsertIn,
    EndpointSecretRotateIn,
    EventTypeIn,
    EventTypeListOptions,
    EventTypePatch,
    MessageAttemptListByMsgOptions,
    MessageIn,
    MessageListOptions,
    ApplicationListOptions,
    MessageStatus,
    Svix,
    SvixOptions,
)
from svix.exceptions import HttpError, HTTPValidationError
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

# Event types, with a JSON Schema that the gateway (run with [event_types] validate = true)
# checks each message of that type against.
schema = {"type": "object", "required": ["amount", "currency"], "properties": {"amount": {"type": "integer"}}}
created = svix.event_type.create(EventTypeIn(name="invoice.paid", description="An invoice was paid", schemas={"1": schema}))
assert created.name == "invoice.paid" and created.schemas == {"1": schema} and created.deprecated is False, created
svix.event_type.create(EventTypeIn(name="invoice.voided", description="An invoice was voided"))
try:
    svix.event_type.create(EventTypeIn(name="invoice.paid", description="again"))
    raise AssertionError("a second event type of the same name was created")
except HttpError as e:
    assert e.status_code == 409, e
assert svix.event_type.patch("invoice.voided", EventTypePatch(description="Voided")).description == "Voided"
assert [t.name for t in svix.event_type.list().data] == ["invoice.paid", "invoice.voided"]
svix.event_type.create(EventTypeIn(name="invoice.old", description="Gone"))
svix.event_type.delete("invoice.old")
assert svix.event_type.get("invoice.old").archived is True
assert "invoice.old" not in [t.name for t in svix.event_type.list().data]
assert "invoice.old" in [t.name for t in svix.event_type.list(EventTypeListOptions(include_archived=True)).data]
try:
    svix.message.create(app.id, MessageIn(event_type="invoice.paid", payload={"amount": "12", "currency": "eur"}))
    raise AssertionError("a payload against its schema was accepted")
except HTTPValidationError as e:
    assert e.status_code == 422 and e.detail[0].loc == ["body", "payload", "amount"], e

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
voided = svix.message.create(app.id, MessageIn(event_type="invoice.voided", payload={"n": 2}))

# Messages are listed newest first, a page at a time, and by type.
assert [m.id for m in svix.message.list(app.id).data] == [voided.id, msg.id]
page = svix.message.list(app.id, MessageListOptions(limit=1))
assert [m.id for m in page.data] == [voided.id] and not page.done and page.iterator, page
page = svix.message.list(app.id, MessageListOptions(limit=1, iterator=page.iterator))
assert [m.id for m in page.data] == [msg.id], page
paid = svix.message.list(app.id, MessageListOptions(event_types=["invoice.paid"])).data
assert [m.id for m in paid] == [msg.id] and paid[0].payload == payload
# Applications page too: both, one at a time.
first = svix.application.list(ApplicationListOptions(limit=1))
second = svix.application.list(ApplicationListOptions(limit=1, iterator=first.iterator))
assert not first.done and {first.data[0].id, second.data[0].id} == {app.id, generated.id}, (first, second)

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

# Attempts, by message and by endpoint, and a resend that arrives with the same svix-id.
attempts = svix.message_attempt.list_by_msg(app.id, msg.id).data
assert len(attempts) == 1 and attempts[0].status == MessageStatus.SUCCESS, attempts
assert attempts[0].endpoint_id == ep.id and attempts[0].response_status_code == 200, attempts[0]
assert [a.id for a in svix.message_attempt.list_by_endpoint(app.id, ep.id).data] == [attempts[0].id]
failed = MessageAttemptListByMsgOptions(status=MessageStatus.FAIL)
assert svix.message_attempt.list_by_msg(app.id, msg.id, failed).data == []
svix.message_attempt.resend(app.id, msg.id, ep.id)
_, again, body_again = received.get(timeout=15)
assert again["svix-id"] == msg.id and body_again == body
Webhook(secret).verify(body_again, again)
for _ in range(100):
    attempts = svix.message_attempt.list_by_msg(app.id, msg.id).data
    if len(attempts) == 2:
        break
    time.sleep(0.05)
assert len(attempts) == 2 and attempts[0].trigger_type == 1, attempts  # the manual one first

# Rotation: the new secret signs from now on, the old one beside it for the grace period.
new_secret = svix.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn()).key
assert new_secret.startswith("whsec_") and new_secret != secret
assert svix.endpoint.get_secret(app.id, ep.id).key == new_secret
rotated = svix.message.create(app.id, MessageIn(event_type="invoice.paid", payload={"amount": 1, "currency": "eur"}))
_, headers3, body3 = received.get(timeout=15)
assert headers3["svix-id"] == rotated.id
Webhook(new_secret).verify(body3, headers3)
Webhook(secret).verify(body3, headers3)  # the old one too, during the grace period
svix.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn(key=secret, grace_period_seconds=0))
assert svix.endpoint.get_secret(app.id, ep.id).key == secret

# Updates: the application's name, an endpoint's types and state.
assert svix.application.patch(app.id, ApplicationPatch(name="Acme Corp")).name == "Acme Corp"
assert svix.application.get(app.id).metadata == {"plan": "pro"}, "a patch keeps what it does not name"
patched = svix.endpoint.patch(app.id, ep.id, EndpointPatch(disabled=True, event_types=["invoice.paid", "invoice.sent"]))
assert patched.disabled and patched.event_types == ["invoice.paid", "invoice.sent"], patched
assert svix.endpoint.patch(app.id, ep.id, EndpointPatch(disabled=False)).disabled is False

# The portal: a link and a token scoped to the application.
portal = svix.authentication.app_portal_access(app.id, AppPortalAccessIn())
assert "#portal=" in portal.url and portal.token, portal
scoped = Svix(portal.token, SvixOptions(server_url=os.environ["HOOKGATE_URL"]))
assert scoped.endpoint.get(app.id, ep.id).id == ep.id
try:
    scoped.application.list()
    raise AssertionError("an application token listed every application")
except HttpError as e:
    assert e.status_code == 401, e
svix.endpoint.delete(app.id, ep.id)
try:
    svix.endpoint.get(app.id, ep.id)
    raise AssertionError("a deleted endpoint was found")
except HttpError as e:
    assert e.status_code == 404 and e.code == "not_found", e
svix.application.delete(generated.id)

# What Svix keeps on an endpoint: a uid that works as its id, a description, metadata, channels
# (only messages sent to one of them arrive) and custom headers (sent; sensitive values never
# shown back). In an application of its own, so Acme's log above stays as checked.
svix.application.create(ApplicationIn(name="Initech", uid="initech"))
chan = svix.endpoint.create("initech", EndpointIn(
    url=receiver_url, uid="billing-hook", description="Billing", metadata={"team": "billing"},
    channels=["project_1"], headers={"X-Tenant": "initech", "X-Api-Key": "k-1"}))
assert (chan.id, chan.uid, chan.description, chan.metadata, chan.channels) == (
    "billing-hook", "billing-hook", "Billing", {"team": "billing"}, ["project_1"]), chan
assert svix.endpoint.get("initech", "billing-hook").description == "Billing"
shown = svix.endpoint.get_headers("initech", "billing-hook")
assert shown.headers == {"X-Tenant": "initech"} and shown.sensitive == ["X-Api-Key"], shown
chan_secret = svix.endpoint.get_secret("initech", "billing-hook").key
svix.message.create("initech", MessageIn(event_type="invoice.paid", payload={"amount": 5, "currency": "eur"}, channels=["project_2"]))
sent = svix.message.create("initech", MessageIn(
    event_type="invoice.paid", payload={"amount": 6, "currency": "eur"}, channels=["project_1", "project_2"]))
# Listing by channel and time.
first_sent = svix.message.list("initech").data[-1]
assert [m.id for m in svix.message.list("initech", MessageListOptions(channel="project_1")).data] == [sent.id]
assert len(svix.message.list("initech", MessageListOptions(channel="project_2")).data) == 2
assert len(svix.message.list("initech", MessageListOptions(after=first_sent.timestamp)).data) == 2
assert svix.message.list("initech", MessageListOptions(before=first_sent.timestamp)).data == []
_, h4, b4 = received.get(timeout=15)
assert h4["svix-id"] == sent.id, "the project_2-only message did not arrive first"
assert h4["x-tenant"] == "initech" and h4["x-api-key"] == "k-1", h4
Webhook(chan_secret).verify(b4, h4)
svix.endpoint.patch_headers("initech", "billing-hook", EndpointHeadersPatchIn(headers={}, delete_headers=["X-Tenant"]))
assert svix.endpoint.get_headers("initech", "billing-hook").headers == {}
try:
    svix.endpoint.patch("initech", "billing-hook", EndpointPatch(uid="renamed"))
    raise AssertionError("a uid changed")
except HTTPValidationError as e:
    assert e.status_code == 422 and "uid" in e.detail[0].msg, e
# PUT on a uid that does not exist creates it (the SDK's upsert).
upserted = svix.endpoint.upsert("initech", "audit-hook", EndpointUpsertIn(url=receiver_url, event_types=["invoice.voided"]))
assert upserted.id == "audit-hook" and svix.endpoint.get("initech", "audit-hook").event_types == ["invoice.voided"]
assert received.empty(), "only the invoice.paid message was delivered"
print("svix flow ok")
