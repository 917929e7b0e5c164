"""The OpenAI Responses API, as the ``openai`` client calls it: a response is a run, a
chain of responses (``previous_response_id``) a conversation, ``model`` an agent or a
catalog model (docs/compat.md)."""
