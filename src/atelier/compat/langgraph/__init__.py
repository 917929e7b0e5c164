"""The LangGraph Agent Server API, as ``langgraph-sdk`` calls it: assistants are agents,
threads are conversations, runs are runs (docs/compat.md)."""
