"""Other APIs' views of the same engine: the LangGraph Agent Server API (``/langgraph``)
and the OpenAI Responses API (``/openai/v1``). Each maps onto conversations, agents and
runs and reads a run's native events; none has a way of running of its own."""
