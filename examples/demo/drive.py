"""Drives the demo host: sends messages for two tenants — acme with its client certificate,
globex with a token, both over TLS — delivers a signed GitHub webhook (and replays it), watches
the host fire acme's heartbeat schedule, shows the host refusing cross-tenant access, and
changes the bundle live while both tenants keep sending."""
import hashlib
import hmac
import json
import os
import re
import ssl
import subprocess
import threading
import sys
import time
import urllib.error
import urllib.request

host_bin, bundle, addr, admin = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

# The public listener serves TLS with the demo CA's certificate (greentic-host dev-ca). Every
# client trusts that CA; acme's billing service also presents its client certificate.
tls_dir = os.path.join(bundle, "tls")
anyone = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.crt"))
acme_billing = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.crt"))
acme_billing.load_cert_chain(os.path.join(tls_dir, "acme-billing.crt"),
                             os.path.join(tls_dir, "acme-billing.key"))


def token(tenant, team=None):
    args = [host_bin, "token", "--bundle", bundle, "--tenant", tenant]
    if team:
        args += ["--team", team]
    return subprocess.check_output(args, text=True).strip()


def request(method, path, body=b"", headers=None, at=None, tls=anyone):
    # The admin listener (at=admin) is plain HTTP on loopback; the public one is TLS.
    url = f"http://{at}{path}" if at else f"https://{addr}{path}"
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=None if at else tls) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def send(tok, payload, extra=None, tls=anyone):
    headers = {"content-type": "application/json"}
    if tok:
        headers["authorization"] = f"Bearer {tok}"
    headers.update(extra or {})
    return request("POST", "/v1/invoke/send", json.dumps(payload).encode(), headers, tls=tls)


def show(title, result):
    status, body = result
    print(f"\n>>> {title}\n    HTTP {status} {body.strip()}", flush=True)
    return status


globex = token("globex")
ok = True
ok &= show("acme's billing service sends a message over mTLS: its client certificate "
           "(spiffe://acme.example/team/billing) is the credential, no token",
           send(None, {"to": "#ops", "text": "deploy finished", "idempotency_key": "demo-1"},
                tls=acme_billing)) == 200
ok &= show("globex sends a message over TLS with its token (its own config, its own secrets)",
           send(globex, {"to": "#alerts", "text": "disk at 91%"})) == 200
ok &= show("acme's token without acme's certificate is refused (caller_auth = \"certificate\")",
           send(token("acme"), {"to": "#ops", "text": "hi"})) == 401
ok &= show("acme's certificate with globex's token is refused: the credentials disagree",
           send(globex, {"to": "#ops", "text": "hi"}, tls=acme_billing)) == 403

delivery = json.dumps({"action": "opened", "pull_request": {"number": 7}}).encode()
sig = "sha256=" + hmac.new(b"acme-demo-github-secret", delivery, hashlib.sha256).hexdigest()
gh = {"x-github-event": "pull_request", "x-github-delivery": "demo-delivery-1",
      "content-type": "application/json"}
ok &= show("GitHub delivers a signed webhook to acme",
           request("POST", "/webhooks/acme/webhook-github/", delivery,
                   {**gh, "x-hub-signature-256": sig})) == 202
ok &= show("…the same delivery replayed is refused: webhook-github remembers ids in greentic:state",
           request("POST", "/webhooks/acme/webhook-github/", delivery,
                   {**gh, "x-hub-signature-256": sig})) == 409
ok &= show("…and a delivery with a forged signature is refused",
           request("POST", "/webhooks/acme/webhook-github/", delivery,
                   {**gh, "x-hub-signature-256": "sha256=" + "0" * 64})) == 401
ok &= show("globex's token with a header claiming to be acme is refused",
           send(globex, {"to": "#ops", "text": "hi"}, {"x-greentic-tenant": "acme"})) == 403
ok &= show("globex's snoop provider asks for acme's GITHUB_WEBHOOK_SECRET: denied",
           send(token("globex", "snoop"), {"to": "x", "text": "GITHUB_WEBHOOK_SECRET"})) == 403
ok &= show("a call without a token or certificate is refused",
           request("POST", "/v1/invoke/send", b"{}")) == 401



def fires():
    _, text = request("GET", "/metrics", at=admin)
    for line in text.splitlines():
        if line.startswith('greentic_calls_total{tenant="acme",provider="timer-heartbeat",'
                           'capability="acme-heartbeat",code="ok"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


deadline = time.monotonic() + 15
while fires() < 2 and time.monotonic() < deadline:
    time.sleep(0.2)
beats = fires()
print(f"\n>>> the host fires acme's heartbeat schedule every 2 s (timer-heartbeat posts to the "
      f"receiver, numbering beats in greentic:state)\n    {beats} fires so far", flush=True)
ok &= beats >= 2



def write_bundle(text):
    path = os.path.join(bundle, "greentic.toml")
    with open(path + ".part", "w") as f:
        f.write(text)
    os.replace(path + ".part", path)


def reload():
    out = subprocess.run([host_bin, "reload", "--admin", admin], capture_output=True, text=True)
    return out.returncode, json.loads(out.stdout)


# Live reload: both tenants keep sending while the bundle changes under them.
stop = threading.Event()
answers = []


def keep_sending(tok, to, tls):
    while not stop.is_set():
        status, body = send(tok, {"to": to, "text": "under reload"}, tls=tls)
        revision = json.loads(body).get("revision") if status == 200 else body
        answers.append((status, revision))


senders = [threading.Thread(target=keep_sending, args=(None, "#ops", acme_billing)),
           threading.Thread(target=keep_sending, args=(globex, "#alerts", anyone))]
for t in senders:
    t.start()
time.sleep(0.5)
original = open(os.path.join(bundle, "greentic.toml")).read()
renamed = re.sub(r'(config\.messaging-webhook = \{ url = "[^"]*/globex")',
                 r'\1, username = "globex-bot"', original, count=1)
write_bundle(renamed)
code, outcome = reload()
print(f"\n>>> while both tenants keep sending, globex's bot gets a name: greentic-host reload\n"
      f"    {outcome['outcome']}: {outcome.get('previous', '')[:19]}… -> "
      f"{outcome.get('digest', '')[:19]}… in {outcome.get('took_ms')} ms", flush=True)
ok &= code == 0 and outcome["outcome"] == "applied"
time.sleep(0.5)
broken = renamed.replace('/globex", username', '/globex", colour = "red", username', 1)
write_bundle(broken)
code, outcome = reload()
print("\n>>> a change globex's provider does not accept is refused whole; the running "
      "revision keeps serving\n    " + outcome["outcome"] + ": " +
      "; ".join(outcome.get("problems", [])), flush=True)
ok &= code != 0 and outcome["outcome"] == "refused"
write_bundle(renamed)
time.sleep(0.5)
stop.set()
for t in senders:
    t.join()
failed = [a for a in answers if a[0] != 200]
revisions = {}
for status, revision in answers:
    if status == 200:
        revisions[revision[:19] + "…"] = revisions.get(revision[:19] + "…", 0) + 1
print(f"\n>>> {len(answers)} calls sent during the changes, {len(failed)} failed; answered by "
      f"revision: {revisions}", flush=True)
ok &= not failed and len(revisions) == 2

ok &= show("/metrics is not served beside the public endpoints",
           request("GET", "/metrics")) == 404
status, metrics = request("GET", "/metrics", at=admin)
print("\n>>> /metrics on the admin listener (calls by tenant, provider and outcome)")
for line in metrics.splitlines():
    if line.startswith("greentic_calls_total"):
        print("    " + line)
sys.exit(0 if ok else 1)
