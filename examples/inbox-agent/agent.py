"""Inbox manager agent: lists Gmail messages, labels one, and tries to send a message.

Runs under `policies/inbox-manager.toml`, where the AEGIS proxy is the only way out:

    GMAIL_TOKEN=... aegis-exec --trust-key k.pub --param APP=$PWD/examples \
        --param STATE=/var/lib/inbox --env STATE=/var/lib/inbox bundle/ -- \
        /usr/bin/python3 /path/to/examples/inbox-agent/agent.py

The agent holds no credential: the proxy adds `Authorization: Bearer <GMAIL_TOKEN>` (read
from aegis-exec's own environment) to the requests the policy allows, and answers everything
else with 403 and an `X-Aegis-Reason` header. Standard library only: `urllib` follows
`HTTPS_PROXY`, and OpenSSL trusts the sandbox CA through `SSL_CERT_FILE`, both set by
aegis-exec.

Prints one JSON object: what was listed, fetched and labelled, what the decision endpoint
said about sending, and what happened when the agent tried to send anyway.
"""
import base64
import json
import os
import sys
import urllib.error
import urllib.request

API = os.environ.get("GMAIL_API", "https://gmail.googleapis.com/gmail/v1/users/me")
LABEL = os.environ.get("INBOX_LABEL", "Label_1")


def call(method, path, body=None):
    """(status, parsed JSON or text, X-Aegis-Reason) of one API call."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, text, reason = r.status, r.read(), r.headers.get("X-Aegis-Reason")
    except urllib.error.HTTPError as e:
        status, text, reason = e.code, e.read(), e.headers.get("X-Aegis-Reason")
    try:
        return status, json.loads(text or b"null"), reason
    except ValueError:
        return status, text.decode("utf-8", "replace"), reason


def ask(query):
    """The proxy's decision endpoint (no proxy in between: it is the proxy)."""
    url = os.environ.get("AEGIS_DECISION_URL")
    if not url:
        return None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=json.dumps(query).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with opener.open(req, timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return {"error": e.code}
    except OSError as e:
        return {"error": str(e)}


def main():
    summary = {}
    status, listing, _ = call("GET", "/messages")
    if status != 200:
        summary["error"] = "listing failed: %s %s" % (status, listing)
        print(json.dumps(summary))
        return 1
    ids = [m["id"] for m in listing.get("messages", [])]
    summary["listed"] = ids

    fetched = {}
    for mid in ids:
        st, msg, _ = call("GET", "/messages/" + mid)
        if st == 200:
            fetched[mid] = msg
    summary["fetched"] = sorted(fetched)

    # Triage: the first unread message gets the label and loses UNREAD.
    target = next((m for m in ids if "UNREAD" in fetched.get(m, {}).get("labelIds", [])), None)
    if target is not None:
        st, msg, reason = call("POST", "/messages/%s/modify" % target, {"addLabelIds": [LABEL], "removeLabelIds": ["UNREAD"]})
        summary["labelled"] = {"id": target, "status": st, "labelIds": msg.get("labelIds") if isinstance(msg, dict) else None, "reason": reason}

    # A well-behaved framework asks first...
    summary["asked_send"] = ask({"kind": "http", "api": "gmail", "method": "POST", "path": "/gmail/v1/users/me/messages/send"})
    # ...and this agent tries anyway, to show that the gate, not the agent's manners, holds.
    raw = base64.urlsafe_b64encode(b"To: someone@example.com\r\nSubject: hi\r\n\r\nhello\r\n").decode()
    st, body, reason = call("POST", "/messages/send", {"raw": raw})
    summary["send"] = {"status": st, "reason": reason}

    state = os.environ.get("STATE")
    if state:
        with open(os.path.join(state, "inbox-state.json"), "w") as f:
            json.dump({"labelled": target, "seen": ids}, f)
        summary["state_file"] = os.path.join(state, "inbox-state.json")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
