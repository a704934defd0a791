"""A LangChain tool that asks AEGIS before it acts.

    from aegis_client import AegisdClient
    from aegis_langchain import aegis_tool

    safe_write = aegis_tool(write_file, {"kind": "fs", "access": "write", "path": "{path}"},
                            client=AegisdClient("my-agent"))
    agent = create_agent(model, tools=[safe_write, ...])

The wrapped tool has the original's name, description and arguments, so the model sees the
same tool. Each call first asks the question (its `{argument}` templates filled from the
call; see `aegis_client.refusal`) and runs the original only when the policy allows it.
Otherwise the original does not run and the tool raises `ToolException` with the refusal:
with `handle_tool_error=True` (the default here) LangChain hands that text to the model as
the tool's result (an error `ToolMessage` for a tool call), so the model learns it is not
allowed, and why, instead of seeing a failed request. With `handle_tool_error=False` the
exception reaches the caller. No client given: `AegisClient()`, the decision endpoint of the
sandbox the agent runs in.

Advice, not enforcement: run the agent under `aegis run` too, so the kernel refuses what a
tool that forgot to ask would do.
"""
from langchain_core.tools import BaseTool, StructuredTool, ToolException

from aegis_client import refusal

__all__ = ["aegis_tool"]


def aegis_tool(tool: BaseTool, question, client=None, handle_tool_error=True) -> BaseTool:
    """`tool`, asking `question` of AEGIS (`client`) before each call."""

    def run(**arguments):
        refused = refusal(tool.name, question, arguments, client)
        if refused:
            raise ToolException(refused)
        return tool.invoke(arguments)

    return StructuredTool.from_function(
        func=run,
        name=tool.name,
        description=tool.description,
        args_schema=tool.get_input_schema(),
        handle_tool_error=handle_tool_error,
    )
