"""The Vercel AI SDK's UI message stream protocol (``useChat``'s default transport)."""
