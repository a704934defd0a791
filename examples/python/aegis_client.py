"""Ask AEGIS before acting: a stdlib client for the proxy's decision endpoint.

Inside an AEGIS sandbox in `proxy` network mode, `aegis-exec` sets `AEGIS_DECISION_URL`
(`http://127.0.0.1:3128/.aegis/v1/check`). A POST there with a JSON question gets the
policy's answer, from the same evaluator as `aegisc check`, and is recorded in the audit log:

    from aegis_client import AegisClient, requires

    aegis = AegisClient()
    if not aegis.check_http("gmail", "POST", "/gmail/v1/users/me/messages/send"):
        ...  # tell the model this tool is unavailable instead of failing later

    @requires(api="gmail", method="POST", path="/gmail/v1/users/me/messages/{message_id}/modify")
    def label_message(message_id, label): ...

An answer is advice for the agent's planning, never a permission: the proxy and the kernel
layers enforce the policy whatever the agent asked. Standard library only.
"""
import functools
import inspect
import json
import os
import urllib.error
import urllib.request

__all__ = ["AegisClient", "AegisError", "Decision", "Denied", "requires"]


class AegisError(Exception):
    """The endpoint could not answer (not in a sandbox, malformed question, ...)."""


class Decision:
    """One answer: `verdict` ("ALLOW" or "DENY"), `reason`, and the deciding `rule`
    (`{"kind": ..., "text": ...}` or None for the default deny). True when allowed."""

    def __init__(self, data):
        self.verdict = data.get("verdict")
        self.reason = data.get("reason", "")
        self.rule = data.get("rule")
        self.raw = data

    @property
    def allowed(self):
        return self.verdict == "ALLOW"

    def __bool__(self):
        return self.allowed

    def __repr__(self):
        return "Decision(%s: %s)" % (self.verdict, self.reason)


class Denied(PermissionError):
    """Raised by a `@requires` tool when the policy denies it; `.decision` says why."""

    def __init__(self, decision, what):
        super().__init__("AEGIS denies %s: %s" % (what, decision.reason))
        self.decision = decision


class AegisClient:
    def __init__(self, url=None, timeout=5.0):
        self.url = url or os.environ.get("AEGIS_DECISION_URL")
        if not self.url:
            raise AegisError("AEGIS_DECISION_URL is not set: not running under aegis-exec in proxy mode")
        self.timeout = timeout
        # The endpoint is the proxy itself: never send the question through HTTP(S)_PROXY.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def check(self, question):
        """Asks one question (a dict with "kind" and its fields); returns a Decision."""
        req = urllib.request.Request(self.url, data=json.dumps(question).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=self.timeout) as r:
                return Decision(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("error", "")
            except ValueError:
                detail = ""
            raise AegisError("decision endpoint answered %d: %s" % (e.code, detail)) from e
        except (OSError, ValueError) as e:
            raise AegisError("decision endpoint unreachable: %s" % e) from e

    def check_api(self, api, scope):
        """May the agent use OAuth scope `scope` of the policy's `[api.<api>]`?"""
        return self.check({"kind": "api", "api": api, "scope": scope})

    def check_http(self, api, method, path):
        """May the agent send `method path` to `[api.<api>]`? (Canonicalised like the proxy.)"""
        return self.check({"kind": "http", "api": api, "method": method, "path": path})

    def check_exec(self, path):
        """May the agent execute `path`?"""
        return self.check({"kind": "exec", "path": path})

    def check_fs(self, access, path):
        """May the agent `access` ("read", "write" or "exec") `path`?"""
        return self.check({"kind": "fs", "access": access, "path": path})

    def check_net(self, host, port, protocol="tcp"):
        """May the agent reach `host:port`?"""
        return self.check({"kind": "net", "host": host, "port": port, "protocol": protocol})


def requires(api=None, method=None, path=None, scope=None, program=None, client=None):
    """Decorator for agent tools (LangChain `@tool`, CrewAI tools, plain functions): before the
    tool runs, ask AEGIS; raise `Denied` instead of running it when the policy says no.

    `path` may name the tool's arguments in braces (`/messages/{message_id}/modify`); they are
    filled in from the call. Give `api` with `method` and `path` (an HTTP call), or `api` with
    `scope`, or `program` (an executable the tool runs)."""

    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def tool(*args, **kwargs):
            c = client or AegisClient()
            if program is not None:
                d, what = c.check_exec(program), "exec %s" % program
            elif scope is not None:
                d, what = c.check_api(api, scope), "api %s scope %s" % (api, scope)
            else:
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                p = path.format(**bound.arguments)
                d, what = c.check_http(api, method, p), "%s %s on api %s" % (method, p, api)
            if not d.allowed:
                raise Denied(d, what)
            return fn(*args, **kwargs)

        return tool

    return wrap
