"""The agent API through the official `openai` Python package, on the two real default models:
structured output, tool calls, log-probabilities, prompt lists and n, embeddings.

Run by tests/tests/agent_api.rs against a live `model-bucket serve` (--parallel 4);
EDEN_BASE_URL, EDEN_SMOL and EDEN_GEMMA say where and what, EDEN_EMBED_FIXTURE where the
reference vectors made with llama-server are.
"""

import base64
import json
import math
import os
import re
import struct
import unittest

try:
    import httpx
except ImportError:  # openai 3 ships its HTTP client as httpx2
    import httpx2 as httpx
import jsonschema
import openai

BASE = os.environ["EDEN_BASE_URL"]
SMOL = os.environ["EDEN_SMOL"]
GEMMA = os.environ["EDEN_GEMMA"]

client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=180)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
        "mood": {"enum": ["happy", "sad", "calm"]},
    },
    "required": ["name", "age", "mood"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "maxLength": 60}},
            "required": ["query"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def raw(method, path, **kw):
    return httpx.request(method, BASE + path, timeout=120, **kw)


def assert_400(test, resp, word):
    test.assertEqual(resp.status_code, 400, resp.text)
    err = resp.json()["error"]
    for key in ("message", "type", "param", "code"):
        test.assertIn(key, err)
    test.assertIn(word, err["message"])


def metric(name, **labels):
    """The value of one series of /metrics (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in raw("GET", "/metrics").text.splitlines():
        m = re.match(r"^(\w+)\{([^}]*)\} (\S+)$", line)
        if m and m.group(1) == name and ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    return 0.0


def arguments_fit(test, call, tool):
    test.assertEqual(call.type, "function")
    test.assertTrue(call.id)
    test.assertEqual(call.function.name, tool["function"]["name"])
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, tool["function"]["parameters"])
    return args


def outside_strings(text):
    """The characters of JSON `text` that are not inside its strings."""
    out, inside, escaped = [], False, False
    for ch in text:
        if inside:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                inside = False
        elif ch == '"':
            inside = True
        else:
            out.append(ch)
    return "".join(out)


class StructuredOutput(unittest.TestCase):
    def test_json_schema_fits_at_temperature_one(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PERSON}}
        for seed in range(5):
            r = client.chat.completions.create(
                model=SMOL,
                messages=[{"role": "user", "content": "Invent a person."}],
                response_format=fmt,
                temperature=1.0,
                seed=seed,
                max_tokens=200,
            )
            choice = r.choices[0]
            self.assertEqual(choice.finish_reason, "stop", choice.message.content)
            jsonschema.validate(json.loads(choice.message.content), PERSON)

    def test_json_is_compact_unless_whitespace_is_asked(self):
        # Newlines made very likely (SmolLM2's token 198 is "\n"): llama.cpp's own schema
        # grammar lets them in between JSON tokens, up to two after each; the default grammar
        # allows none, so the answer's tokens go to its content.
        fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}

        def ask(**extra):
            r = client.chat.completions.create(
                model=SMOL,
                messages=[{"role": "user", "content": "Invent a person."}],
                response_format=fmt,
                temperature=0,
                max_tokens=200,
                logit_bias={"198": 30},
                extra_body=extra,
            )
            self.assertEqual(r.choices[0].finish_reason, "stop", r.choices[0].message.content)
            text = r.choices[0].message.content
            jsonschema.validate(json.loads(text), PERSON)
            return text, r.usage.completion_tokens

        compact, compact_tokens = ask()
        self.assertFalse(re.search(r"\s", outside_strings(compact)), compact)
        spaced, spaced_tokens = ask(json_whitespace=True)
        self.assertIn("\n", outside_strings(spaced), spaced)
        self.assertLess(compact_tokens, spaced_tokens)

    def test_json_object_parses(self):
        # A 135M model can loop inside an open object until max_tokens; every answer that ends
        # parses, and most end.
        ended = 0
        for seed in range(5):
            r = client.chat.completions.create(
                model=SMOL,
                messages=[{"role": "user", "content": "Describe a cat as a small JSON object."}],
                response_format={"type": "json_object"},
                temperature=0.7,
                seed=seed,
                max_tokens=600,
                extra_body={"repeat_penalty": 1.3},
            )
            if r.choices[0].finish_reason == "stop":
                ended += 1
                self.assertIsInstance(json.loads(r.choices[0].message.content), dict)
        self.assertGreaterEqual(ended, 3)

    def test_any_model_and_a_raw_grammar(self):
        # Gemma 3 has no chat template: completions, with a schema and with llama-server's GBNF field.
        r = client.completions.create(
            model=GEMMA,
            prompt="A person as JSON:",
            max_tokens=200,
            temperature=1.0,
            seed=3,
            extra_body={"json_schema": PERSON},
        )
        jsonschema.validate(json.loads(r.choices[0].text), PERSON)
        r = client.completions.create(
            model=GEMMA,
            prompt="Is the sky blue?",
            max_tokens=10,
            extra_body={"grammar": 'root ::= ("yes" | "no") "."'},
        )
        self.assertIn(r.choices[0].text, ("yes.", "no."))

    def test_streamed_json_schema(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
        stream = client.chat.completions.create(
            model=SMOL,
            messages=[{"role": "user", "content": "Invent a person."}],
            response_format=fmt,
            stream=True,
            seed=11,
            max_tokens=200,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        jsonschema.validate(json.loads(text), PERSON)


class ToolCalls(unittest.TestCase):
    def test_required_returns_a_valid_call(self):
        for seed in range(3):
            r = client.chat.completions.create(
                model=SMOL,
                messages=ASK_WEATHER,
                tools=[WEATHER, SEARCH],
                tool_choice="required",
                temperature=1.0,
                seed=seed,
                max_tokens=120,
            )
            choice = r.choices[0]
            self.assertEqual(choice.finish_reason, "tool_calls")
            self.assertEqual(len(choice.message.tool_calls), 1)
            call = choice.message.tool_calls[0]
            arguments_fit(self, call, WEATHER if call.function.name == "get_weather" else SEARCH)

    def test_named_function_streamed_and_not(self):
        choice = {"type": "function", "function": {"name": "search"}}
        r = client.chat.completions.create(
            model=SMOL,
            messages=ASK_WEATHER,
            tools=[WEATHER, SEARCH],
            tool_choice=choice,
            max_tokens=120,
            temperature=0,
            extra_body={"cache_prompt": False},
        )
        whole = arguments_fit(self, r.choices[0].message.tool_calls[0], SEARCH)
        stream = client.chat.completions.create(
            model=SMOL,
            messages=ASK_WEATHER,
            tools=[WEATHER, SEARCH],
            tool_choice=choice,
            max_tokens=120,
            temperature=0,
            stream=True,
            extra_body={"cache_prompt": False},
        )
        calls, finish = {}, None
        for chunk in stream:
            for c in chunk.choices:
                for d in c.delta.tool_calls or []:
                    slot = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
                    slot["id"] = d.id or slot["id"]
                    if d.function and d.function.name:
                        slot["name"] = d.function.name
                    if d.function and d.function.arguments:
                        slot["arguments"] += d.function.arguments
                finish = c.finish_reason or finish
        self.assertEqual(finish, "tool_calls")
        self.assertEqual(len(calls), 1)
        self.assertTrue(calls[0]["id"])
        self.assertEqual(calls[0]["name"], "search")
        self.assertEqual(json.loads(calls[0]["arguments"]), whole)

    def test_history_with_calls_and_results(self):
        messages = ASK_WEATHER + [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18, "sky": "clear"}'},
        ]
        r = client.chat.completions.create(model=SMOL, messages=messages, tools=[WEATHER], max_tokens=40)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length", "tool_calls"))
        r = client.chat.completions.create(
            model=SMOL, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=30, temperature=0
        )
        self.assertIsNone(r.choices[0].message.tool_calls)
        self.assertTrue(r.choices[0].message.content)

    def test_none_answers_in_text(self):
        r = client.chat.completions.create(
            model=SMOL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="none", max_tokens=30, temperature=0
        )
        self.assertIsNone(r.choices[0].message.tool_calls)
        self.assertNotEqual(r.choices[0].finish_reason, "tool_calls")
        self.assertTrue(r.choices[0].message.content)


class Logprobs(unittest.TestCase):
    def test_greedy_puts_the_chosen_token_first(self):
        r = client.chat.completions.create(
            model=SMOL, messages=ASK_WEATHER, max_tokens=8, temperature=0, logprobs=True, top_logprobs=5
        )
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), r.usage.completion_tokens)
        self.assertEqual("".join(t.token for t in content), r.choices[0].message.content)
        for t in content:
            self.assertEqual(len(t.top_logprobs), 5)
            self.assertEqual(t.top_logprobs[0].token, t.token)
            self.assertAlmostEqual(t.top_logprobs[0].logprob, t.logprob, places=5)
            self.assertLessEqual(t.logprob, 0)
            self.assertEqual(bytes(t.bytes).decode(), t.token)
            lps = [a.logprob for a in t.top_logprobs]
            self.assertEqual(lps, sorted(lps, reverse=True))
            self.assertLessEqual(sum(math.exp(x) for x in lps), 1.0001)

    def test_a_long_unstreamed_answer_keeps_every_logprob(self):
        # More tokens than one worker message carries for an unstreamed answer.
        r = client.completions.create(
            model=SMOL, prompt="Once upon a time", max_tokens=1100, temperature=0, logprobs=1, logit_bias={"2": -100}
        )
        lp = r.choices[0].logprobs
        self.assertEqual(r.usage.completion_tokens, 1100)
        self.assertEqual(len(lp.tokens), 1100)
        self.assertEqual("".join(lp.tokens), r.choices[0].text)

    def test_streamed_and_completions_logprobs(self):
        stream = client.chat.completions.create(
            model=SMOL, messages=ASK_WEATHER, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2, stream=True
        )
        tokens = [t for c in stream if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
        self.assertEqual(len(tokens), 6)
        r = client.completions.create(model=GEMMA, prompt="One, two, three,", max_tokens=5, temperature=0, logprobs=3)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 5)
        self.assertEqual("".join(lp.tokens), r.choices[0].text)
        for tok, top in zip(lp.tokens, lp.top_logprobs):
            self.assertEqual(max(top, key=top.get), tok)


class Choices(unittest.TestCase):
    def test_a_prompt_list_matches_single_prompts(self):
        prompts = ["The capital of France is", "One, two, three,", "def add(a, b):"]
        batch = client.completions.create(model=SMOL, prompt=prompts, max_tokens=12, temperature=0)
        self.assertEqual([c.index for c in batch.choices], [0, 1, 2])
        for i, p in enumerate(prompts):
            one = client.completions.create(model=SMOL, prompt=p, max_tokens=12, temperature=0)
            self.assertEqual(batch.choices[i].text, one.choices[0].text, p)
        self.assertEqual(batch.usage.completion_tokens, sum(1 for _ in prompts) * 12)

    def test_n_choices_share_one_prefill(self):
        prompt = "Write a short story about a lighthouse keeper who finds a message in a bottle. " * 4
        before = metric("model_bucket_prompt_tokens_by_source_total", model=SMOL, source="shared")
        r = client.completions.create(model=SMOL, prompt=prompt, n=3, max_tokens=16, temperature=0)
        self.assertEqual([c.index for c in r.choices], [0, 1, 2])
        after = metric("model_bucket_prompt_tokens_by_source_total", model=SMOL, source="shared")
        # Two of three sequences copy the prefill: all of it, or all but the last token when
        # their request reached the worker after the prompt was decoded.
        shared = after - before
        self.assertGreaterEqual(shared, 2 * (r.usage.prompt_tokens - 1), "two of three sequences copy the prefill")
        self.assertLessEqual(shared, 2 * r.usage.prompt_tokens)
        # Copied cells give exactly the answer a prefill gives.
        alone = client.completions.create(
            model=SMOL, prompt=prompt, max_tokens=16, temperature=0, extra_body={"cache_prompt": False}
        )
        for c in r.choices:
            self.assertEqual(c.text, alone.choices[0].text)
        self.assertEqual(r.usage.completion_tokens, 48)

    def test_n_on_a_sliding_window_model(self):
        prompt = "The old library at the end of the street was full of dusty books, maps and letters. " * 3 + "Inside,"
        r = client.completions.create(model=GEMMA, prompt=prompt, n=3, max_tokens=16, temperature=0)
        alone = client.completions.create(
            model=GEMMA, prompt=prompt, max_tokens=16, temperature=0, extra_body={"cache_prompt": False}
        )
        self.assertEqual([c.text for c in r.choices], [alone.choices[0].text] * 3)

    def test_n_sampled_chat_choices_differ(self):
        r = client.chat.completions.create(
            model=SMOL,
            messages=[{"role": "user", "content": "Name an animal."}],
            n=3,
            temperature=1.0,
            seed=7,
            max_tokens=12,
        )
        self.assertEqual(len(r.choices), 3)
        self.assertGreater(len({c.message.content for c in r.choices}), 1)
        again = client.chat.completions.create(
            model=SMOL,
            messages=[{"role": "user", "content": "Name an animal."}],
            n=3,
            temperature=1.0,
            seed=7,
            max_tokens=12,
        )
        self.assertEqual([c.message.content for c in r.choices], [c.message.content for c in again.choices])


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


class Embeddings(unittest.TestCase):
    def test_width_and_ranking(self):
        texts = ["The cat sat on the mat.", "A cat was sitting on a rug.", "Interest rates rose again this quarter."]
        r = client.embeddings.create(model=SMOL, input=texts)
        self.assertEqual([d.index for d in r.data], [0, 1, 2])
        # SmolLM2-135M's hidden size.
        self.assertEqual({len(d.embedding) for d in r.data}, {576})
        v = [d.embedding for d in r.data]
        for x in v:
            self.assertAlmostEqual(math.sqrt(sum(t * t for t in x)), 1.0, places=4)
        self.assertGreater(cosine(v[0], v[1]), cosine(v[0], v[2]))
        self.assertGreater(r.usage.prompt_tokens, 0)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens)

    def test_base64_and_tokens(self):
        f = client.embeddings.create(model=GEMMA, input="hello world", encoding_format="float").data[0].embedding
        resp = raw("POST", "/v1/embeddings", json={"model": GEMMA, "input": "hello world", "encoding_format": "base64"})
        b = base64.b64decode(resp.json()["data"][0]["embedding"])
        decoded = struct.unpack(f"<{len(b) // 4}f", b)
        self.assertEqual(len(decoded), len(f))
        self.assertGreater(cosine(decoded, f), 0.99999)
        t = raw("POST", "/v1/embeddings", json={"model": GEMMA, "input": [[2, 9259, 1902]]})
        self.assertEqual(t.status_code, 200, t.text)
        self.assertEqual(t.json()["usage"]["prompt_tokens"], 3)

    def test_match_llama_server(self):
        with open(os.environ["EDEN_EMBED_FIXTURE"]) as f:
            fixture = json.load(f)
        for entry in fixture["models"]:
            model = SMOL if entry["file"].startswith("SmolLM2") else GEMMA
            got = client.embeddings.create(model=model, input=[e["text"] for e in entry["vectors"]])
            for e, d in zip(entry["vectors"], got.data):
                self.assertGreaterEqual(cosine(e["embedding"], d.embedding), 0.9999, f'{entry["file"]}: {e["text"]}')


class BadInput(unittest.TestCase):
    def test_each_is_a_400_with_the_envelope(self):
        chat = "/v1/chat/completions"
        ask = {"model": SMOL, "messages": ASK_WEATHER, "max_tokens": 5}
        client.chat.completions.create(model=SMOL, messages=ASK_WEATHER, max_tokens=1)
        pid = raw("GET", f"/v1/models/{SMOL}").json()["worker"]["pid"]
        bad_ref = {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}
        assert_400(
            self,
            raw("POST", chat, json={**ask, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": bad_ref}}}),
            "JSON schema",
        )
        assert_400(self, raw("POST", chat, json={**ask, "grammar": "root ::= ("}), "GBNF")
        assert_400(self, raw("POST", chat, json={**ask, "tools": [{"type": "function", "function": {"parameters": {}}}]}), "name")
        assert_400(self, raw("POST", chat, json={**ask, "logprobs": True, "top_logprobs": 50}), "top_logprobs")
        assert_400(self, raw("POST", chat, json={**ask, "n": 0}), "n must be")
        assert_400(self, raw("POST", "/v1/embeddings", json={"model": SMOL, "input": []}), "empty")
        assert_400(self, raw("POST", "/v1/embeddings", json={"model": SMOL, "input": ["x"] * 2049}), "at most 2048")
        # What the worker's schema converter and grammar parser would choke on is refused first.
        wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(200)}}
        assert_400(self, raw("POST", chat, json={**ask, "json_schema": wide}), "properties")
        assert_400(self, raw("POST", chat, json={**ask, "grammar": 'root ::= "a"{100000}'}), "repetition")
        assert_400(self, raw("POST", "/v1/completions", json={"model": SMOL, "prompt": []}), "empty")
        # Constraints nothing can satisfy end the request, not the worker (llama.cpp aborts on a
        # grammar with no way forward).
        assert_400(self, raw("POST", chat, json={**ask, "grammar": r"root ::= [^\x00-\U0010FFFF]"}), "cannot be satisfied")
        impossible = {"type": "integer", "minimum": 5, "maximum": 3}
        assert_400(self, raw("POST", chat, json={**ask, "json_schema": impossible}), "cannot be satisfied")
        # The worker is still the same and still serving.
        r = client.chat.completions.create(model=SMOL, messages=ASK_WEATHER, max_tokens=3)
        self.assertTrue(r.choices[0].message.content)
        self.assertEqual(raw("GET", f"/v1/models/{SMOL}").json()["worker"]["pid"], pid)


if __name__ == "__main__":
    unittest.main()
