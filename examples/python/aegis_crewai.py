"""A CrewAI tool that asks AEGIS before it acts.

    from aegis_client import AegisdClient
    from aegis_crewai import AegisTool

    safe_write = AegisTool.wrap(WriteFileTool(), {"kind": "fs", "access": "write", "path": "{path}"},
                                client=AegisdClient("my-agent"))
    Agent(role=..., tools=[safe_write, ...])

The wrapper has the original's name, description and arguments, so the model sees the same
tool. Each call first asks the question (its `{argument}` templates filled from the call;
see `aegis_client.refusal`) and runs the original only when the policy allows it. Otherwise
the original does not run and the call returns a `ToolFailure` (code `aegis::denied`; also
when AEGIS could not answer): CrewAI shows the model its message ("AEGIS
denies ...: reason") and records the call as failed (`TaskOutput.tool_failures`; the tool's,
task's or agent's `tool_failure_policy` may make it stop the crew). No client given:
`AegisClient()`, the decision endpoint of the sandbox the agent runs in.

Advice, not enforcement: run the agent under `aegis run` too, so the kernel refuses what a
tool that forgot to ask would do.
"""
from typing import Any

from crewai.tools import BaseTool, ToolFailure

from aegis_client import refusal

__all__ = ["AegisTool"]


class AegisTool(BaseTool):
    inner: BaseTool
    question: Any
    client: Any = None

    @classmethod
    def wrap(cls, tool: BaseTool, question, client=None) -> "AegisTool":
        """`tool`, asking `question` of AEGIS (`client`) before each call."""
        return cls(name=tool.name, description=tool.description, args_schema=tool.args_schema,
                   inner=tool, question=question, client=client)

    def _run(self, **arguments) -> Any:
        refused = refusal(self.name, self.question, arguments, self.client)
        if refused:
            return ToolFailure(message=refused, code="aegis::denied")
        return self.inner.run(**arguments)
