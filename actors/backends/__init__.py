"""The engine's backends: what actually generates behind `actors.engine.Engine`.

- base.py    the errors every backend raises (EngineError, EngineUnavailable) and the Backend protocol
- vllm.py    vLLM's v1 AsyncLLM in this process (continuous batching of every concurrent call)
- openai.py  an OpenAI-compatible HTTP server (e.g. an external `vllm serve`), via `openai.AsyncOpenAI`

vLLM and the openai client are imported only inside the methods that need them.
"""
