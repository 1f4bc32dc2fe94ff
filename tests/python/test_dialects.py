"""The Anthropic Messages and Ollama dialects through their official Python clients
(`anthropic`, `ollama`), on the two real default models. Each answer is checked against the
same request sent as OpenAI Chat Completions at temperature 0: a dialect is a translation, so
the text must be the same.

Run by tests/tests/dialects.rs against a live `model-bucket serve`; EDEN_BASE_URL, EDEN_SMOL
and EDEN_GEMMA say where and what.
"""

import datetime
import json
import os
import time
import unittest

try:
    import httpx
except ImportError:  # openai 3 ships its HTTP client as httpx2
    import httpx2 as httpx
import anthropic
import jsonschema
import ollama
import openai

BASE = os.environ["EDEN_BASE_URL"]
SMOL = os.environ["EDEN_SMOL"]
GEMMA = os.environ["EDEN_GEMMA"]

oai = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=180)
claude = anthropic.Anthropic(base_url=BASE, api_key="unused", max_retries=0, timeout=180)
olla = ollama.Client(host=BASE, timeout=180)

SYSTEM = "You are terse."
QUESTION = "Name three colours of the rainbow."
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {"name": "get_weather", "description": "Current weather in a city", "input_schema": WEATHER_SCHEMA}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris right now?"}]
# Today's Anthropic SDK has no sampling arguments; clients send them as extra body fields.
GREEDY = {"temperature": 0}


def openai_text(model, max_tokens, system=SYSTEM, question=QUESTION):
    r = oai.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
    )
    return r.choices[0].message.content


class AnthropicMessages(unittest.TestCase):
    def ask(self, **kw):
        return claude.messages.create(
            model=SMOL, max_tokens=24, extra_body=GREEDY, system=SYSTEM,
            messages=[{"role": "user", "content": QUESTION}], **kw
        )

    def test_text_matches_chat_completions(self):
        for model in (SMOL,):
            m = claude.messages.create(
                model=model, max_tokens=24, extra_body=GREEDY, system=SYSTEM,
                messages=[{"role": "user", "content": QUESTION}],
            )
            self.assertEqual(m.type, "message")
            self.assertEqual(m.role, "assistant")
            self.assertTrue(m.id.startswith("msg_"))
            self.assertEqual([b.type for b in m.content], ["text"])
            self.assertEqual(m.content[0].text, openai_text(model, 24), model)
            self.assertIn(m.stop_reason, ("end_turn", "max_tokens"))
            self.assertGreater(m.usage.output_tokens, 0)
            self.assertGreater(m.usage.input_tokens + m.usage.cache_read_input_tokens, 10)

    def test_max_tokens_is_the_stop_reason_when_reached(self):
        m = claude.messages.create(
            model=SMOL, max_tokens=3, extra_body=GREEDY, messages=[{"role": "user", "content": "Write a long story."}]
        )
        self.assertEqual(m.stop_reason, "max_tokens")
        self.assertEqual(m.usage.output_tokens, 3)

    def test_stream_events_build_the_same_message(self):
        whole = self.ask()
        with claude.messages.stream(
            model=SMOL, max_tokens=24, extra_body=GREEDY, system=SYSTEM,
            messages=[{"role": "user", "content": QUESTION}],
        ) as s:
            types = [e.type for e in s]
            final = s.get_final_message()
        self.assertEqual(types[0], "message_start")
        self.assertEqual(types[-1], "message_stop")
        self.assertIn("content_block_delta", types)
        self.assertIn("message_delta", types)
        self.assertEqual(final.content[0].text, whole.content[0].text)
        self.assertEqual(final.stop_reason, whole.stop_reason)
        self.assertEqual(final.usage.output_tokens, whole.usage.output_tokens)
        total = lambda m: m.usage.input_tokens + m.usage.cache_read_input_tokens
        self.assertEqual(total(final), total(whole))

    def test_any_forces_a_tool_use_whole_and_streamed(self):
        for seed_text in ("Paris", "Oslo"):
            messages = [{"role": "user", "content": f"What is the weather in {seed_text} right now?"}]
            m = claude.messages.create(
                model=SMOL, max_tokens=120, extra_body=GREEDY, messages=messages,
                tools=[WEATHER], tool_choice={"type": "any"},
            )
            self.assertEqual(m.stop_reason, "tool_use")
            uses = [b for b in m.content if b.type == "tool_use"]
            self.assertEqual(len(uses), 1)
            self.assertEqual(uses[0].name, "get_weather")
            self.assertTrue(uses[0].id.startswith("toolu_"))
            jsonschema.validate(uses[0].input, WEATHER_SCHEMA)
            with claude.messages.stream(
                model=SMOL, max_tokens=120, extra_body=GREEDY, messages=messages,
                tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"},
            ) as s:
                final = s.get_final_message()
            streamed = [b for b in final.content if b.type == "tool_use"]
            self.assertEqual(final.stop_reason, "tool_use")
            self.assertEqual(streamed[0].input, uses[0].input)

    def test_tool_results_in_history(self):
        messages = ASK_WEATHER + [
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temperature": 18, "sky": "clear"}'},
            ]},
        ]
        m = claude.messages.create(
            model=SMOL, max_tokens=30, extra_body=GREEDY, messages=messages, tools=[WEATHER], tool_choice={"type": "none"}
        )
        self.assertNotEqual(m.stop_reason, "tool_use")
        self.assertTrue(m.content[0].text)
        # The history reached the model: the same turns as OpenAI messages give the same text.
        r = oai.chat.completions.create(
            model=SMOL, max_tokens=30, temperature=0, tool_choice="none",
            tools=[{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                                     "parameters": WEATHER_SCHEMA}}],
            messages=ASK_WEATHER + [
                {"role": "assistant", "content": "", "tool_calls": [{"id": "toolu_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"}, separators=(",", ":"))}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": '{"temperature": 18, "sky": "clear"}'},
            ],
        )
        self.assertEqual(m.content[0].text, r.choices[0].message.content)

    def test_output_format_schema_is_followed(self):
        person = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                                   "age": {"type": "integer", "minimum": 0, "maximum": 120}},
                  "required": ["name", "age"], "additionalProperties": False}
        for seed in range(3):
            m = claude.messages.create(
                model=SMOL, max_tokens=80, messages=[{"role": "user", "content": "Invent a person."}],
                output_config={"format": {"type": "json_schema", "schema": person}},
                extra_body={"temperature": 1.0, "seed": seed},
            )
            jsonschema.validate(json.loads(m.content[0].text), person)

    def test_count_tokens_is_what_a_request_prefills(self):
        n = claude.messages.count_tokens(
            model=SMOL, system=SYSTEM, messages=[{"role": "user", "content": QUESTION}]
        ).input_tokens
        m = self.ask()
        self.assertEqual(n, m.usage.input_tokens + m.usage.cache_read_input_tokens)
        with_tools = claude.messages.count_tokens(
            model=SMOL, system=SYSTEM, messages=[{"role": "user", "content": QUESTION}], tools=[WEATHER]
        ).input_tokens
        self.assertGreater(with_tools, n)

    def test_same_text_as_llama_server(self):
        with open(os.environ["EDEN_DIALECT_FIXTURE"]) as f:
            fixture = json.load(f)
        for case in fixture["cases"]:
            # Prefilled whole, as llama-server prefilled it when the fixture was made: a prefix
            # reused from the cache is computed in other batches, which may move a near tie.
            ask = dict(model=SMOL, max_tokens=fixture["max_tokens"], extra_body=dict(GREEDY, cache_prompt=False),
                       messages=[{"role": "user", "content": case["user"]}])
            if case["system"]:
                ask["system"] = case["system"]
            m = claude.messages.create(**ask)
            self.assertEqual(m.content[0].text, case["messages_text"], case["user"])

    def test_errors_in_anthropics_envelope(self):
        with self.assertRaises(anthropic.NotFoundError) as e:
            claude.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        self.assertEqual(e.exception.body["type"], "error")
        self.assertEqual(e.exception.body["error"]["type"], "not_found_error")
        with self.assertRaises(anthropic.BadRequestError) as e:
            claude.messages.create(model=SMOL, max_tokens=5, messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGk="}}]}])
        self.assertEqual(e.exception.body["error"]["type"], "invalid_request_error")
        r = httpx.post(BASE + "/v1/messages", json={"model": SMOL, "messages": "wrong"}, timeout=30)
        self.assertEqual(r.status_code, 400)
        self.assertEqual(r.json()["error"]["type"], "invalid_request_error")
        r = httpx.post(BASE + "/v1/messages", json={"model": SMOL, "messages": [{"role": "user", "content": "x"}]}, timeout=30)
        self.assertEqual(r.status_code, 400)
        self.assertIn("max_tokens", r.json()["error"]["message"])


class OllamaApi(unittest.TestCase):
    OPTIONS = {"temperature": 0, "num_predict": 24}

    def test_chat_matches_chat_completions_whole_and_streamed(self):
        for model in (SMOL,):
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
            r = olla.chat(model=model + ":latest", messages=messages, options=self.OPTIONS, stream=False)
            self.assertTrue(r.done)
            self.assertIn(r.done_reason, ("stop", "length"))
            self.assertEqual(r.message.role, "assistant")
            self.assertEqual(r.message.content, openai_text(model, 24), model)
            self.assertGreater(r.eval_count, 0)
            self.assertGreater(r.prompt_eval_count, 10)
            parts = list(olla.chat(model=model, messages=messages, options=self.OPTIONS, stream=True))
            self.assertGreater(len(parts), 2)
            self.assertTrue(parts[-1].done)
            self.assertTrue(all(not p.done for p in parts[:-1]))
            self.assertEqual("".join(p.message.content for p in parts), r.message.content)
            self.assertEqual(parts[-1].eval_count, r.eval_count)

    def test_generate_templated_and_raw(self):
        r = olla.generate(model=SMOL, prompt=QUESTION, system=SYSTEM, options=self.OPTIONS)
        self.assertTrue(r.done)
        self.assertEqual(r.response, openai_text(SMOL, 24))
        raw = olla.generate(model=SMOL, prompt="The capital of France is", raw=True, options=self.OPTIONS)
        c = oai.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=24, temperature=0)
        self.assertEqual(raw.response, c.choices[0].text)
        streamed = "".join(p.response for p in olla.generate(model=SMOL, prompt=QUESTION, system=SYSTEM,
                                                               options=self.OPTIONS, stream=True))
        self.assertEqual(streamed, r.response)
        loaded = olla.generate(model=SMOL, prompt="")
        self.assertEqual(loaded.done_reason, "load")

    def test_generate_on_a_model_without_a_chat_template_takes_the_prompt_as_it_is(self):
        # Gemma's file here has no chat template.
        r = olla.generate(model=GEMMA, prompt="The capital of France is", options=self.OPTIONS)
        c = oai.completions.create(model=GEMMA, prompt="The capital of France is", max_tokens=24, temperature=0)
        self.assertEqual(r.response, c.choices[0].text)
        with self.assertRaises(ollama.ResponseError) as e:
            olla.chat(model=GEMMA, messages=[{"role": "user", "content": "hi"}], stream=False)
        self.assertEqual(e.exception.status_code, 400)

    def test_format_schema_is_followed(self):
        person = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                                   "age": {"type": "integer", "minimum": 0, "maximum": 120}},
                  "required": ["name", "age"], "additionalProperties": False}
        r = olla.chat(model=SMOL, messages=[{"role": "user", "content": "Invent a person."}], format=person,
                      options={"temperature": 1.0, "seed": 7, "num_predict": 80}, stream=False)
        jsonschema.validate(json.loads(r.message.content), person)
        # An object however long it runs: what came is its start.
        j = olla.generate(model=SMOL, prompt="Give me a JSON object.", format="json", options={"num_predict": 30})
        self.assertTrue(j.response.lstrip().startswith("{"), j.response)

    def test_tools_reach_the_model_and_calls_come_back_as_objects(self):
        tool = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                                 "parameters": WEATHER_SCHEMA}}
        r = olla.chat(model=SMOL, messages=ASK_WEATHER, tools=[tool], options={"temperature": 0, "num_predict": 120},
                      stream=False)
        for call in r.message.tool_calls or []:
            self.assertEqual(call.function.name, "get_weather")
            self.assertIsInstance(call.function.arguments, dict)
        history = ASK_WEATHER + [
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
            {"role": "tool", "content": '{"temperature": 18}', "tool_name": "get_weather"},
        ]
        after = olla.chat(model=SMOL, messages=history, options=self.OPTIONS, stream=False)
        self.assertTrue(after.message.content)

    def test_embed_matches_openai_embeddings(self):
        r = olla.embed(model=SMOL, input=["a cat", "a dog"])
        self.assertEqual(len(r.embeddings), 2)
        o = oai.embeddings.create(model=SMOL, input=["a cat", "a dog"])
        for mine, theirs in zip(r.embeddings, o.data):
            self.assertEqual(len(mine), len(theirs.embedding))
            self.assertLess(max(abs(a - b) for a, b in zip(mine, theirs.embedding)), 1e-6)
        one = olla.embeddings(model=SMOL, prompt="a cat")
        self.assertLess(max(abs(a - b) for a, b in zip(one.embedding, r.embeddings[0])), 1e-6)

    def test_list_ps_show_version(self):
        names = {m.model: m for m in olla.list().models}
        for model in (SMOL, GEMMA):
            self.assertIn(model, names)
            self.assertEqual(names[model].details.format, "gguf")
            self.assertGreater(names[model].size, 1_000_000)
        olla.chat(model=SMOL, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2})
        loaded = [m.model for m in olla.ps().models]
        self.assertIn(SMOL, loaded)
        s = olla.show(SMOL)
        self.assertIn("im_start", s.template)
        self.assertIn("completion", s.capabilities)
        self.assertEqual(s.details.family, "llama")
        self.assertEqual(s.modelinfo["general.architecture"], "llama")
        self.assertGreater(s.modelinfo["llama.context_length"], 0)
        self.assertTrue(httpx.get(BASE + "/api/version", timeout=30).json()["version"])
        # What `ollama stop` sends: an empty prompt with keep_alive 0 unloads the model.
        gone = olla.generate(model=SMOL, prompt="", keep_alive=0)
        self.assertEqual(gone.done_reason, "unload")
        self.assertNotIn(SMOL, [m.model for m in olla.ps().models])

    def test_keep_alive_sets_the_idle_time(self):
        # This server never unloads an idle model on its own (no --idle-ttl): a client's
        # keep_alive makes it go once idle that long, as Ollama does.
        hi = [{"role": "user", "content": "hi"}]
        olla.chat(model=SMOL, messages=hi, options={"num_predict": 2}, keep_alive="10m")
        ps = {m.model: m for m in olla.ps().models}
        left = (ps[SMOL].expires_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        self.assertTrue(540 < left <= 600, left)
        olla.chat(model=SMOL, messages=hi, options={"num_predict": 2}, keep_alive=1)
        deadline = time.monotonic() + 60
        while SMOL in [m.model for m in olla.ps().models]:
            self.assertLess(time.monotonic(), deadline, "still loaded a minute after keep_alive 1")
            time.sleep(0.2)
        # No messages loads it; a negative keep_alive is the server's own setting (for ever).
        loaded = olla.chat(model=SMOL, messages=[], keep_alive="-1m")
        self.assertEqual(loaded.done_reason, "load")
        ps = {m.model: m for m in olla.ps().models}
        self.assertGreater(ps[SMOL].expires_at.year, 9000)
        with self.assertRaises(ollama.ResponseError) as e:
            olla.chat(model=SMOL, messages=hi, keep_alive="soon")
        self.assertEqual(e.exception.status_code, 400)
        self.assertIn("keep_alive", e.exception.error)

    def test_errors_in_ollamas_envelope(self):
        with self.assertRaises(ollama.ResponseError) as e:
            olla.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}], stream=False)
        self.assertEqual(e.exception.status_code, 404)
        self.assertIn("no-such-model", e.exception.error)
        with self.assertRaises(ollama.ResponseError) as e:
            olla.chat(model=SMOL, messages=[{"role": "user", "content": "x", "images": ["aGk="]}], stream=False)
        self.assertEqual(e.exception.status_code, 400)

    def test_curl_without_a_json_type_but_not_from_a_page(self):
        body = json.dumps({"model": SMOL, "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = httpx.post(BASE + "/api/generate", content=body, headers=form, timeout=60)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertTrue(r.json()["done"])
        page = dict(form, **{"Sec-Fetch-Site": "same-origin"})
        r = httpx.post(BASE + "/api/generate", content=body, headers=page, timeout=60)
        self.assertEqual(r.status_code, 415, r.text)
        self.assertIn("error", r.json())
        r = httpx.post(BASE + "/v1/chat/completions", content=body, headers=form, timeout=60)
        self.assertEqual(r.status_code, 415, r.text)


if __name__ == "__main__":
    unittest.main()
