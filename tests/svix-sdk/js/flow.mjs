// Everyday calls of the official Svix JavaScript SDK against Hookgate's Svix-compatible API,
// unchanged but for the server URL. Run by tests/svix.rs with HOOKGATE_URL and HOOKGATE_TOKEN
// (the admin token, Svix's organisation token). A receiver in this process takes the deliveries
// and verifies each with the SDK's own `Webhook` class. Prints "svix js flow ok" when every
// check passed; any failed check throws, which exits non-zero.

import assert from "node:assert/strict";
import http from "node:http";
import { MessageStatus, Svix, Webhook } from "svix";

const received = [];
let wake = () => {};
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    received.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
    res.writeHead(200).end();
    wake();
  });
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const receiverUrl = `http://127.0.0.1:${server.address().port}/hook`;

/** The next delivery, waiting at most 15 s for it. */
async function nextDelivery() {
  const deadline = Date.now() + 15_000;
  while (received.length === 0) {
    assert.ok(Date.now() < deadline, "no delivery within 15 s");
    await new Promise((ok) => {
      wake = ok;
      setTimeout(ok, 200);
    });
  }
  return received.shift();
}

/** Runs `call`, which must fail with HTTP `status`; returns the exception. */
async function refused(status, call) {
  try {
    await call();
  } catch (e) {
    assert.equal(e.code, status, `${e}`);
    return e;
  }
  assert.fail(`expected HTTP ${status}`);
}

const serverUrl = process.env.HOOKGATE_URL;
const svix = new Svix(process.env.HOOKGATE_TOKEN, { serverUrl });

const app = await svix.application.create({ name: "Globex", uid: "globex", metadata: { plan: "pro" } });
assert.equal(app.uid, "globex");
assert.deepEqual(app.metadata, { plan: "pro" });
assert.ok(app.createdAt instanceof Date && !Number.isNaN(app.createdAt.getTime()), "createdAt parses");
assert.equal((await svix.application.getOrCreate({ name: "Globex", uid: "globex" })).id, app.id);
assert.equal((await svix.application.get("globex")).id, app.id);

const schema = { type: "object", required: ["amount"], properties: { amount: { type: "integer" } } };
const created = await svix.eventType.create({ name: "order.placed", description: "An order", schemas: { 1: schema } });
assert.equal(created.name, "order.placed");
await refused(409, () => svix.eventType.create({ name: "order.placed", description: "again" }));
assert.ok((await svix.eventType.list()).data.some((t) => t.name === "order.placed"));

const ep = await svix.endpoint.create(app.id, { url: receiverUrl, filterTypes: ["order.placed"] });
assert.equal(ep.url, receiverUrl);
assert.deepEqual(ep.filterTypes, ["order.placed"]);
assert.equal(ep.description, "");
assert.ok((await svix.endpoint.list(app.id)).data.some((e) => e.id === ep.id));
const secret = (await svix.endpoint.getSecret(app.id, ep.id)).key;
assert.match(secret, /^whsec_/);

const payload = { amount: 42, items: [{ sku: "b-2", qty: 1 }], note: "ünïcode" };
const msg = await svix.message.create(app.id, { eventType: "order.placed", payload, eventId: "order-1" });
assert.match(msg.id, /^msg_/);
assert.deepEqual(msg.payload, payload);
await refused(409, () => svix.message.create(app.id, { eventType: "order.placed", payload, eventId: "order-1" }));
const invalid = await refused(422, () =>
  svix.message.create(app.id, { eventType: "order.placed", payload: { amount: "42" } }),
);
assert.deepEqual(invalid.body.detail[0].loc, ["body", "payload", "amount"]);
const later = await refused(422, () =>
  svix.message.create(app.id, { eventType: "order.placed", payload, deliverAt: new Date(Date.now() + 60_000) }),
);
assert.match(later.body.detail[0].msg, /deliverAt/, "not sent at once when it was meant for later");

const got = await nextDelivery();
assert.equal(got.path, "/hook");
assert.equal(got.headers["svix-id"], msg.id);
new Webhook(secret).verify(got.body, got.headers); // throws when the signature does not verify
assert.deepEqual(JSON.parse(got.body), payload);
assert.equal(got.body, JSON.stringify(payload), "the bytes the SDK sent, as they are");
assert.throws(() => new Webhook(secret).verify(got.body + " ", got.headers), "a changed body does not verify");

assert.deepEqual((await svix.message.list(app.id)).data.map((m) => m.id), [msg.id]);
assert.deepEqual((await svix.message.get(app.id, msg.id)).payload, payload);

const attempts = (await svix.messageAttempt.listByMsg(app.id, msg.id)).data;
assert.equal(attempts.length, 1);
assert.equal(attempts[0].status, MessageStatus.Success);
assert.equal(attempts[0].responseStatusCode, 200);
assert.equal(attempts[0].endpointId, ep.id);
assert.deepEqual((await svix.messageAttempt.listByEndpoint(app.id, ep.id)).data.map((a) => a.id), [attempts[0].id]);
await svix.messageAttempt.resend(app.id, msg.id, ep.id);
const again = await nextDelivery();
assert.equal(again.headers["svix-id"], msg.id);
new Webhook(secret).verify(again.body, again.headers);

// Rotation with the SDK's default grace period: both secrets verify the next delivery.
await svix.endpoint.rotateSecret(app.id, ep.id, {});
const rotated = (await svix.endpoint.getSecret(app.id, ep.id)).key;
assert.notEqual(rotated, secret);
await svix.message.create(app.id, { eventType: "order.placed", payload: { amount: 1 } });
const third = await nextDelivery();
new Webhook(rotated).verify(third.body, third.headers);
new Webhook(secret).verify(third.body, third.headers);

const patched = await svix.endpoint.patch(app.id, ep.id, { disabled: true });
assert.equal(patched.disabled, true);
assert.equal((await svix.application.patch(app.id, { name: "Globex Corp" })).name, "Globex Corp");

const portal = await svix.authentication.appPortalAccess(app.id, {});
assert.match(portal.url, /#portal=/);
const scoped = new Svix(portal.token, { serverUrl });
assert.equal((await scoped.endpoint.get(app.id, ep.id)).id, ep.id);
await refused(401, () => scoped.application.list());

await svix.endpoint.delete(app.id, ep.id);
const gone = await refused(404, () => svix.endpoint.get(app.id, ep.id));
assert.equal(gone.body.code, "not_found");
// Endpoint details Svix keeps, in an application of its own (Globex's log stays as checked):
// a uid that works as the id, description, metadata, channels and custom headers.
await svix.application.create({ name: "Umbrella", uid: "umbrella" });
const hook = await svix.endpoint.create("umbrella", {
  url: receiverUrl,
  uid: "ops-hook",
  description: "Ops",
  metadata: { team: "ops" },
  channels: ["eu"],
  headers: { "X-Region": "eu" },
});
assert.deepEqual([hook.id, hook.uid, hook.description, hook.metadata, hook.channels], [
  "ops-hook",
  "ops-hook",
  "Ops",
  { team: "ops" },
  ["eu"],
]);
await svix.message.create("umbrella", { eventType: "order.placed", payload: { amount: 2 }, channels: ["us"] });
const eu = await svix.message.create("umbrella", { eventType: "order.placed", payload: { amount: 3 }, channels: ["eu"] });
const regional = await nextDelivery();
assert.equal(regional.headers["svix-id"], eu.id, "the us-only message is not delivered");
assert.equal(regional.headers["x-region"], "eu");
assert.equal(received.length, 0, "nothing else was delivered");
server.close();
console.log("svix js flow ok");
