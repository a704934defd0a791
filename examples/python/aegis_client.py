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

Outside a sandbox, `AegisdClient("inbox-manager")` asks `aegisd` (docs/aegisd.md) the same
questions over its Unix socket, for an agent registered there. `refusal()` is what the tool
wrappers (aegis_langchain.py, aegis_crewai.py) share.

An answer is advice for the agent's planning, never a permission: the proxy and the kernel
layers enforce the policy whatever the agent asked. Standard library only.
"""
import functools
import inspect
import json
import os
import socket
import urllib.error
import urllib.request

__all__ = ["AegisClient", "AegisdClient", "AegisError", "Decision", "Denied", "refusal", "requires"]


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


class _Questions:
    """The questions, for both transports; `check(question)` is the transport's."""

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


class AegisClient(_Questions):
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


class AegisdClient(_Questions):
    """Asks `aegisd` for agent `agent` (registered there with `aegis register`). The socket:
    `socket_path`, else `$AEGIS_SOCKET`, else `$AEGIS_DIR/aegisd.sock`, else
    `${XDG_STATE_HOME:-$HOME/.local/state}/aegis/aegisd.sock`, as the `aegis` client finds it."""

    _OPS = {"fs": "check-fs", "exec": "check-exec", "net": "check-net", "api": "check-api", "http": "check-api"}

    def __init__(self, agent, socket_path=None, timeout=5.0):
        self.agent = agent
        self.socket_path = socket_path or _default_socket()
        if not self.socket_path:
            raise AegisError("no aegisd socket: set AEGIS_SOCKET or AEGIS_DIR (neither HOME nor XDG_STATE_HOME is set)")
        self.timeout = timeout

    def check(self, question):
        """Asks one question (a dict with "kind" and its fields, as for AegisClient)."""
        fields = dict(question)
        op = self._OPS.get(fields.pop("kind", None))
        if op is None:
            raise AegisError("unknown question kind %r" % question.get("kind"))
        line = json.dumps(dict(fields, op=op, agent=self.agent)).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.socket_path)
                s.sendall(line)
                answer = s.makefile("rb").readline()
            data = json.loads(answer)
        except (OSError, ValueError) as e:
            raise AegisError("aegisd at %s did not answer: %s" % (self.socket_path, e)) from e
        if not data.get("ok"):
            err = data.get("error") or {}
            raise AegisError("aegisd refused the question: %s: %s" % (err.get("code"), err.get("message")))
        return Decision(data)


def _default_socket():
    if os.environ.get("AEGIS_SOCKET"):
        return os.environ["AEGIS_SOCKET"]
    state = os.environ.get("AEGIS_DIR")
    if not state:
        xdg, home = os.environ.get("XDG_STATE_HOME", ""), os.environ.get("HOME", "")
        base = xdg if xdg.startswith("/") else os.path.join(home, ".local/state") if home.startswith("/") else None
        state = base and os.path.join(base, "aegis")
    return state and os.path.join(state, "aegisd.sock")


def refusal(tool, question, arguments, client=None):
    """For tool wrappers: asks before tool `tool` runs with `arguments` (a dict). `question` is a
    dict whose string values may name the arguments in braces (`{"kind": "fs", "access":
    "write", "path": "{path}"}`), or a function of the arguments that returns one. Returns None
    when the policy allows the call, else the refusal to give the agent instead of acting.
    Fails closed: when AEGIS cannot answer (or the question cannot be filled in), the tool
    must not run either, and the refusal says why."""
    try:
        if callable(question):
            q = question(arguments)
        else:
            q = {k: v.format(**arguments) if isinstance(v, str) else v for k, v in question.items()}
        decision = (client or AegisClient()).check(q)
    except Exception as e:  # noqa: BLE001 -- whatever went wrong, the tool does not run
        return "AEGIS could not decide, so %s did not run: %s" % (tool, e)
    if decision.allowed:
        return None
    return "AEGIS denies %s: %s" % (tool, decision.reason)


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
