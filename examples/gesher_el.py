#!/usr/bin/env python3
"""A stand-in for the Gesher-El daemon: a loop of think -> intent -> command -> memory, each
step on its own task's model (``model="task:NAME"``), with the official ``openai`` SDK.

- thinking: free text, streamed.
- intent: JSON that must fit a schema (``response_format`` json_schema); the answer is validated.
- command: the model must call one of the offered tools (``tool_choice="required"``); the call is
  carried out by a harmless stand-in that only describes what it would do.
- memory: the exchange is condensed into one line (streamed), embedded (``/v1/embeddings``), and
  the nearest earlier memory is looked up by cosine similarity.

    pip install openai jsonschema
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
import math
import os
import sys
import time

import jsonschema
from openai import OpenAI

EVENTS = [
    "remind me to water the plants at six",
    "what is using all the disk space?",
    "good night",
]

INTENT_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["remind", "search", "run", "chat", "ignore"]},
        "subject": {"type": "string", "maxLength": 60},
    },
    "required": ["intent", "subject"],
    "additionalProperties": False,
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "run_shell",
            "description": "Run one shell command on the home server",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string", "maxLength": 80}},
                "required": ["command"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_reminder",
            "description": "Remind the user of something at a time of day",
            "parameters": {
                "type": "object",
                "properties": {
                    "time": {"type": "string", "maxLength": 10},
                    "text": {"type": "string", "maxLength": 60},
                },
                "required": ["time", "text"],
                "additionalProperties": False,
            },
        },
    },
]


def stand_in(name, args):
    """What the daemon would do for a call; nothing is run."""
    if name == "run_shell":
        return f"would run: {args['command']}"
    return f"would remind at {args['time']}: {args['text']}"


def stream_text(client, task, system, user, max_tokens):
    """Streams one free-text step; returns (text, serving model, seconds to first token, tokens)."""
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


def intent_step(client, thinking):
    """The thought as an intent object that fits INTENT_SCHEMA."""
    r = client.chat.completions.create(
        model="task:intent",
        messages=[
            {"role": "system", "content": "Name the intent of the thought and its subject."},
            {"role": "user", "content": f"Thought: {thinking}"},
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "intent", "strict": True, "schema": INTENT_SCHEMA}},
        max_tokens=96,
        temperature=0.7,
    )
    intent = json.loads(r.choices[0].message.content)
    jsonschema.validate(intent, INTENT_SCHEMA)
    return intent, r.model, r.usage.completion_tokens


def command_step(client, intent, thinking):
    """One tool call for the intent, carried out by the stand-in."""
    r = client.chat.completions.create(
        model="task:command",
        messages=[
            {"role": "system", "content": "Carry out the intent with one of the tools."},
            {"role": "user", "content": f"Intent: {json.dumps(intent)}\nThought: {thinking}"},
        ],
        tools=TOOLS,
        tool_choice="required",
        max_tokens=128,
        temperature=0.7,
    )
    call = r.choices[0].message.tool_calls[0]
    args = json.loads(call.function.arguments)
    tool = next(t for t in TOOLS if t["function"]["name"] == call.function.name)
    jsonschema.validate(args, tool["function"]["parameters"])
    return {"name": call.function.name, "arguments": args}, stand_in(call.function.name, args), r.model, r.usage.completion_tokens


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)) or 1.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default=os.environ.get("EDEN_BASE_URL", "http://127.0.0.1:8080/v1"))
    ap.add_argument("--api-key", default=os.environ.get("EDEN_API_KEY", "local"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=48, help="for the free-text steps")
    ap.add_argument("--json", action="store_true", help="print one JSON object per step")
    args = ap.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    memories = []  # (text, vector)

    def report(r, task, model, tokens, text, **extra):
        if args.json:
            print(json.dumps({"round": r, "task": task, "model": model, "tokens": tokens, "text": text, **extra}), flush=True)
        else:
            more = "".join(f" {k}={json.dumps(v)}" for k, v in extra.items())
            print(f"[{task:<8} -> {model}] {text}{more}", flush=True)

    for r in range(args.rounds):
        event = EVENTS[r % len(EVENTS)]
        last = memories[-1][0] if memories else "(nothing yet)"
        thinking, model, ttft, tokens = stream_text(
            client,
            "thinking",
            "You are the inner voice of a home assistant. Think in one or two sentences.",
            f"Memory so far: {last}\nThe user said: {event}\nWhat should happen next?",
            args.max_tokens,
        )
        thinking = thinking or "(empty)"
        report(r, "thinking", model, tokens, thinking, ttft_s=ttft)

        intent, model, tokens = intent_step(client, thinking)
        report(r, "intent", model, tokens, json.dumps(intent), intent=intent)

        call, result, model, tokens = command_step(client, intent, thinking)
        report(r, "command", model, tokens, result, tool_call=call)

        memory, model, ttft, tokens = stream_text(
            client,
            "memory",
            "Condense the exchange into one short line worth remembering.",
            f"Event: {event}\nThought: {thinking}\nIntent: {json.dumps(intent)}\nDone: {result}\nMemory:",
            args.max_tokens,
        )
        memory = memory or event
        vector = client.embeddings.create(model="task:memory", input=memory).data[0].embedding
        nearest = max(memories, key=lambda m: cosine(m[1], vector), default=None)
        extra = {"nearest": nearest[0], "similarity": round(cosine(nearest[1], vector), 4)} if nearest else {"nearest": None}
        memories.append((memory, vector))
        report(r, "memory", model, tokens, memory, dimensions=len(vector), **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
