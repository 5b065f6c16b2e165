"""An unmodified `openai` program: only `base_url` and the API key point it at the AIOS gateway,
and every request becomes a syscall of the agent whose key it carries (scheduled, accounted,
traced: `aios trace <the completion id>`).

    .venv/bin/aios up --detach
    .venv/bin/python examples/openai_unchanged.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from openai import OpenAI


def main() -> None:
    home = Path(os.environ.get("AIOS_HOME", ".aios"))
    conn = json.loads((home / "connection.json").read_text())
    client = OpenAI(base_url=conn["gateway_url"], api_key=f"{conn['agent']}:{conn['token']}")

    reply = client.chat.completions.create(
        model="sim-llama-8b", messages=[{"role": "user", "content": "Say hello to AIOS."}]
    )
    print("reply:", reply.choices[0].message.content)
    print("trace it with: aios trace", reply.id)

    print("streamed: ", end="")
    for chunk in client.chat.completions.create(
        model="sim-llama-8b", messages=[{"role": "user", "content": "Count to five."}], stream=True
    ):
        for choice in chunk.choices:
            print(choice.delta.content or "", end="", flush=True)
    print()

    vectors = client.embeddings.create(model="sim-embed", input=["agents", "kernels"])
    print("embedding dimensions:", len(vectors.data[0].embedding))


if __name__ == "__main__":
    main()
