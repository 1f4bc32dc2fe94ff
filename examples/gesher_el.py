#!/usr/bin/env python3
"""A stand-in for the Gesher-El daemon: a loop of think -> intent -> command -> memory, each
step on its own task's model (``model="task:NAME"``), streamed, with the official ``openai`` SDK.

Each step feeds the next: the thought is parsed into an intent, the intent becomes a shell
command, and the exchange is condensed into a memory line that the next round starts from.

    pip install openai
    python3 examples/gesher_el.py --rounds 2
    python3 examples/gesher_el.py --base-url http://127.0.0.1:8080/v1 --json   # one JSON line per step

The server needs the four tasks in its config (``deploy/start.sh`` writes them on first start):

    [tasks]
    thinking = ["eden_llama3_8b", "eden_smollm2_135m"]
    intent = ["eden_smollm2_135m"]
    command = ["eden_deepseek_coder_6_7b", "eden_smollm2_135m"]
    memory = ["eden_gemma3_270m", "eden_smollm2_135m"]
"""

import argparse
import json
import os
import sys
import time

from openai import OpenAI

STEPS = [
    ("thinking", "You are the inner voice of a home assistant. Think in one or two sentences.",
     "Memory so far: {memory}\nThe user said: {event}\nWhat should happen next?"),
    ("intent", "Reply with one word naming the intent: remind, search, run, chat or ignore.",
     "Thought: {thinking}\nIntent:"),
    ("command", "Write one shell command that carries out the intent. Reply with the command only.",
     "Intent: {intent}\nThought: {thinking}\nCommand:"),
    ("memory", "Condense the exchange into one short line worth remembering.",
     "Event: {event}\nThought: {thinking}\nIntent: {intent}\nCommand: {command}\nMemory:"),
]

EVENTS = [
    "remind me to water the plants at six",
    "what is using all the disk space?",
    "good night",
]


def run_step(client, task, system, user, max_tokens):
    """Streams one step; returns (text, serving model, seconds to first token, tokens)."""
    started = time.monotonic()
    first = None
    text, model, tokens = "", None, 0
    stream = client.chat.completions.create(
        model=f"task:{task}",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        max_tokens=max_tokens,
        temperature=0.7,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        model = chunk.model or model
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            piece = choice.delta.content or ""
            if piece and first is None:
                first = time.monotonic() - started
            text += piece
    return text.strip(), model, first, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default=os.environ.get("EDEN_BASE_URL", "http://127.0.0.1:8080/v1"))
    ap.add_argument("--api-key", default=os.environ.get("EDEN_API_KEY", "local"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--json", action="store_true", help="print one JSON object per step")
    args = ap.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    memory = "(nothing yet)"
    for r in range(args.rounds):
        ctx = {"memory": memory, "event": EVENTS[r % len(EVENTS)]}
        for task, system, template in STEPS:
            text, model, ttft, tokens = run_step(client, task, system, template.format(**ctx), args.max_tokens)
            ctx[task] = text or "(empty)"
            if args.json:
                print(json.dumps({"round": r, "task": task, "model": model, "tokens": tokens,
                                  "ttft_s": ttft, "text": text}), flush=True)
            else:
                print(f"[{task:<8} -> {model}] {text}", flush=True)
        memory = ctx["memory"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
