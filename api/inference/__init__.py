"""The metered inference gateway: the OpenAI protocol at ``/inference/v1``, paid from quotas of tokens.

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/inference/v1", api_key="tk_...<id>.<secret>")
    client.chat.completions.create(model="DEEPSEEK-V3", messages=[{"role": "user", "content": "hi"}])

``gateway`` serves ``POST /inference/v1/chat/completions`` (streamed as server-sent events or not) and
``GET /inference/v1/models``; ``upstream`` forwards one attempt of a call to one provider and keeps the providers'
health; ``simulated`` is a stand-in provider for the demo, tests and benchmarks.
"""
