"""The README's Python example, runnable: python examples/quickstart/client.py [BASE_URL]."""

import sys

from openai import OpenAI

base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
client = OpenAI(base_url=base_url, api_key="sk-switchyard-demo")
reply = client.chat.completions.create(
    model="demo-chat", messages=[{"role": "user", "content": "Hello!"}]
)
print(reply.choices[0].message.content)  # Hello! You said: Hello!

for chunk in client.chat.completions.create(
    model="demo-chat", messages=[{"role": "user", "content": "Stream this"}], stream=True
):
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
