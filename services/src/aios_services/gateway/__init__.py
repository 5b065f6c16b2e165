"""The gateway: an OpenAI-compatible HTTP front door to the kernel (`/v1/chat/completions`,
`/v1/embeddings`, `/v1/models`); every request is a syscall of the agent whose key it carries."""
