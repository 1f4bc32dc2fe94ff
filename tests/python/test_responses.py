"""The OpenAI Responses API through the official `openai` Python package, on SmolLM2: text,
streaming events, forced function calls, `previous_response_id` across three turns with the
cached prefix growing, retrieve, delete and cancel. Each answer is checked against the same
conversation sent to Chat Completions at temperature 0.

Run by tests/tests/dialects.rs against a live `model-bucket serve`; EDEN_BASE_URL and EDEN_SMOL
say where and what.
"""

import json
import os
import unittest

import jsonschema
import openai

BASE = os.environ["EDEN_BASE_URL"]
SMOL = os.environ["EDEN_SMOL"]

client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=180)

SYSTEM = "You are terse."
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": WEATHER_SCHEMA, "strict": True}


def chat_text(messages, max_tokens):
    r = client.chat.completions.create(model=SMOL, messages=messages, max_tokens=max_tokens, temperature=0)
    return r.choices[0].message.content


class Responses(unittest.TestCase):
    def test_text_matches_chat_completions(self):
        r = client.responses.create(model=SMOL, instructions=SYSTEM, input="Name three colours.",
                                    max_output_tokens=24, temperature=0)
        self.assertTrue(r.id.startswith("resp_"))
        self.assertEqual(r.object, "response")
        self.assertIn(r.status, ("completed", "incomplete"))
        self.assertEqual(r.output[0].type, "message")
        want = chat_text([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name three colours."}], 24)
        self.assertEqual(r.output_text, want)
        self.assertEqual(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens)
        short = client.responses.create(model=SMOL, input="Write a long story.", max_output_tokens=3, temperature=0)
        self.assertEqual(short.status, "incomplete")
        self.assertEqual(short.incomplete_details.reason, "max_output_tokens")
        self.assertEqual(short.usage.output_tokens, 3)

    def test_stream_events_in_their_documented_order(self):
        ask = dict(model=SMOL, input="Name three colours.", max_output_tokens=60, temperature=0, store=False)
        whole = client.responses.create(**ask)
        self.assertEqual(whole.status, "completed")
        events = list(client.responses.create(stream=True, **ask))
        types = [e.type for e in events]
        self.assertEqual(types[:4], ["response.created", "response.in_progress", "response.output_item.added",
                                     "response.content_part.added"])
        self.assertEqual(types[-4:], ["response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.completed"])
        self.assertEqual([e.sequence_number for e in events], list(range(len(events))))
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        self.assertEqual(deltas, whole.output_text)
        self.assertEqual(events[-1].response.output_text, whole.output_text)
        self.assertEqual(events[-1].response.usage.output_tokens, whole.usage.output_tokens)
        # Every event names the item it belongs to, as the final object names it.
        final_ids = [o.id for o in events[-1].response.output]
        for e in events:
            if hasattr(e, "item_id") and e.item_id is not None:
                self.assertEqual(e.item_id, final_ids[e.output_index], e.type)
            if e.type in ("response.output_item.added", "response.output_item.done"):
                self.assertEqual(e.item.id, final_ids[e.output_index])
        with client.responses.stream(**ask) as s:
            final = s.get_final_response()
        self.assertEqual(final.output_text, whole.output_text)
        # Cut short by max_output_tokens: the stream ends with response.incomplete.
        short = list(client.responses.create(model=SMOL, input="Write a long story.", max_output_tokens=3,
                                             temperature=0, store=False, stream=True))
        self.assertEqual(short[-1].type, "response.incomplete")
        self.assertEqual(short[-1].response.incomplete_details.reason, "max_output_tokens")

    def test_forced_function_call_whole_and_streamed(self):
        ask = "What is the weather in Paris right now?"
        r = client.responses.create(model=SMOL, input=ask, tools=[WEATHER], tool_choice="required",
                                    max_output_tokens=120, temperature=0)
        calls = [o for o in r.output if o.type == "function_call"]
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0].name, "get_weather")
        self.assertTrue(calls[0].call_id)
        args = json.loads(calls[0].arguments)
        jsonschema.validate(args, WEATHER_SCHEMA)
        with client.responses.stream(model=SMOL, input=ask, tools=[WEATHER],
                                     tool_choice={"type": "function", "name": "get_weather"},
                                     max_output_tokens=120, temperature=0) as s:
            kinds = [e.type for e in s]
            final = s.get_final_response()
        self.assertIn("response.function_call_arguments.delta", kinds)
        streamed = [o for o in final.output if o.type == "function_call"]
        self.assertEqual(json.loads(streamed[0].arguments), args)
        # The call's output continues the conversation: the same turns sent to Chat Completions,
        # the call and its result linked by the same ID, give the same answer.
        after = client.responses.create(model=SMOL, previous_response_id=r.id, max_output_tokens=30, temperature=0,
                                        tools=[WEATHER], tool_choice="none",
                                        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                                "output": '{"temperature": 18}'}])
        chat = client.chat.completions.create(
            model=SMOL, max_tokens=30, temperature=0, tool_choice="none",
            tools=[{"type": "function", "function": {"name": "get_weather", "description": WEATHER["description"],
                                                     "parameters": WEATHER_SCHEMA}}],
            messages=[{"role": "user", "content": ask},
                      {"role": "assistant", "content": "", "tool_calls": [{"id": calls[0].call_id, "type": "function",
                       "function": {"name": "get_weather", "arguments": calls[0].arguments}}]},
                      {"role": "tool", "tool_call_id": calls[0].call_id, "content": '{"temperature": 18}'}])
        self.assertEqual(after.output_text, chat.choices[0].message.content)

    def test_three_turns_continue_with_a_growing_cached_prefix(self):
        turns = ["My name is Ada and I like chess. Say hello.", "What is my name?", "What game do I like?"]
        history = [{"role": "system", "content": SYSTEM}]
        previous, cached = None, []
        for text in turns:
            r = client.responses.create(model=SMOL, instructions=SYSTEM, input=text, previous_response_id=previous,
                                        max_output_tokens=20, temperature=0)
            history.append({"role": "user", "content": text})
            # The same conversation sent whole to Chat Completions gives the same answer.
            self.assertEqual(r.output_text, chat_text(history, 20))
            history.append({"role": "assistant", "content": r.output_text})
            cached.append(r.usage.input_tokens_details.cached_tokens)
            self.assertEqual(r.previous_response_id, previous)
            previous = r.id
        self.assertGreater(cached[1], 0)
        self.assertGreater(cached[2], cached[1])

    def test_retrieve_delete_cancel(self):
        r = client.responses.create(model=SMOL, input="Say hi.", max_output_tokens=8, temperature=0)
        got = client.responses.retrieve(r.id)
        self.assertEqual((got.id, got.output_text), (r.id, r.output_text))
        with self.assertRaises(openai.BadRequestError):
            client.responses.cancel(r.id)
        client.responses.delete(r.id)
        with self.assertRaises(openai.NotFoundError):
            client.responses.retrieve(r.id)
        with self.assertRaises(openai.NotFoundError):
            client.responses.create(model=SMOL, input="again", previous_response_id=r.id, max_output_tokens=4)
        unstored = client.responses.create(model=SMOL, input="Say hi.", max_output_tokens=4, store=False)
        with self.assertRaises(openai.NotFoundError):
            client.responses.retrieve(unstored.id)

    def test_same_text_as_llama_server(self):
        with open(os.environ["EDEN_DIALECT_FIXTURE"]) as f:
            fixture = json.load(f)
        for case in fixture["cases"]:
            # Prefilled whole, as llama-server prefilled it when the fixture was made.
            ask = dict(model=SMOL, input=case["user"], max_output_tokens=fixture["max_tokens"], temperature=0,
                       store=False, extra_body={"cache_prompt": False})
            if case["system"]:
                ask["instructions"] = case["system"]
            self.assertEqual(client.responses.create(**ask).output_text, case["responses_text"], case["user"])

    def test_bad_inputs_are_400s(self):
        for bad in (
            dict(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]),
            dict(input="x", tools=[{"type": "web_search"}]),
            dict(input="x", text={"format": {"type": "yaml"}}),
        ):
            with self.assertRaises(openai.BadRequestError):
                client.responses.create(model=SMOL, **bad)


if __name__ == "__main__":
    unittest.main()
