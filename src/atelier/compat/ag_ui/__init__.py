"""AG-UI (``@ag-ui/client``'s ``HttpAgent``, CopilotKit): a ``RunAgentInput`` in, an SSE
stream of AG-UI events out."""
