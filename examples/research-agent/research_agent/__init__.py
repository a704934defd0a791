"""The research agent example; `python3 -m research_agent` runs `__main__`."""
