"""The HTTP API through the official `openai` Python package, on the two real default models.

Run by tests/tests/openai_api.rs against a live `model-bucket serve` (started with
--parallel 2); EDEN_BASE_URL, EDEN_SMOL and EDEN_GEMMA say where and what.
"""

import json
import os
import threading
import unittest

try:
    import httpx
except ImportError:  # openai 3 ships its HTTP client as httpx2
    import httpx2 as httpx
import openai

BASE = os.environ["EDEN_BASE_URL"]
SMOL = os.environ["EDEN_SMOL"]  # full ID
GEMMA = os.environ["EDEN_GEMMA"]
SMOL_ALIAS = SMOL.rsplit("_", 1)[0]
EOS_SMOL = "2"

client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=120)
ASK = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def raw(method, path, **kw):
    return httpx.request(method, BASE + path, timeout=60, **kw)


def assert_envelope(test, resp, status):
    test.assertEqual(resp.status_code, status, resp.text)
    err = resp.json()["error"]
    for key in ("message", "type", "param", "code"):
        test.assertIn(key, err)
    test.assertTrue(err["message"])
    return err


class Models(unittest.TestCase):
    def test_list_and_retrieve(self):
        models = client.models.list().data
        ids = {m.id for m in models}
        self.assertEqual(ids, {SMOL, GEMMA})
        smol = next(m for m in models if m.id == SMOL)
        self.assertEqual(smol.object, "model")
        self.assertEqual(smol.owned_by, "model-bucket")
        extra = smol.model_extra
        self.assertIn("chat", extra["capabilities"])
        self.assertEqual(extra["context_length"], 8192)
        self.assertIn(SMOL_ALIAS, extra["aliases"])
        self.assertIn(extra["state"], ("unloaded", "loading", "ready"))
        self.assertEqual(client.models.retrieve(SMOL_ALIAS).id, SMOL)
        gemma = client.models.retrieve(GEMMA)
        self.assertNotIn("chat", gemma.model_extra["capabilities"])

    def test_unknown_model_is_404(self):
        with self.assertRaises(openai.NotFoundError) as cm:
            client.models.retrieve("eden_nope_1b")
        self.assertEqual(cm.exception.status_code, 404)
        self.assertEqual(raw("GET", "/health").json()["status"], "ok")


class Chat(unittest.TestCase):
    def test_answer_and_usage(self):
        r = client.chat.completions.create(model=SMOL, messages=ASK, temperature=0, max_tokens=16)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.model, SMOL)
        self.assertIn("Paris", r.choices[0].message.content)
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(r.usage.prompt_tokens, 30)  # the template's default system prompt
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)
        # The alias gives the same greedy answer; max_completion_tokens works too.
        r2 = client.chat.completions.create(model=SMOL_ALIAS, messages=ASK, temperature=0, max_completion_tokens=16)
        self.assertEqual(r2.choices[0].message.content, r.choices[0].message.content)

    def test_stream_with_usage(self):
        chunks = list(
            client.chat.completions.create(
                model=SMOL, messages=ASK, temperature=0, max_tokens=16, stream=True,
                stream_options={"include_usage": True},
            )
        )
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertIn("Paris", text)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(len(finishes), 1)
        self.assertEqual(chunks[-1].choices, [])
        self.assertGreater(chunks[-1].usage.completion_tokens, 0)
        # Same text as the non-streamed answer.
        r = client.chat.completions.create(model=SMOL, messages=ASK, temperature=0, max_tokens=16)
        self.assertEqual(text, r.choices[0].message.content)
        # No usage chunk unless asked for.
        plain = list(client.chat.completions.create(model=SMOL, messages=ASK, temperature=0, max_tokens=4, stream=True))
        self.assertTrue(all(c.usage is None for c in plain))

    def test_seed_gives_the_same_text(self):
        kw = dict(model=SMOL, messages=[{"role": "user", "content": "Tell me a story."}], temperature=1.0, max_tokens=30)
        a = client.chat.completions.create(seed=42, **kw).choices[0].message.content
        b = client.chat.completions.create(seed=42, **kw).choices[0].message.content
        self.assertEqual(a, b)

    def test_logit_bias_bans_eos(self):
        r = client.chat.completions.create(
            model=SMOL, messages=[{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=40,
            logit_bias={EOS_SMOL: -100},
        )
        self.assertEqual(r.usage.completion_tokens, 40)
        self.assertEqual(r.choices[0].finish_reason, "length")

    def test_chat_on_a_model_without_template_is_400(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            client.chat.completions.create(model=GEMMA, messages=ASK)
        self.assertIn("chat template", cm.exception.message)


class Completions(unittest.TestCase):
    def test_completion_and_stop(self):
        r = client.completions.create(model=GEMMA, prompt="1, 2, 3, 4, 5,", temperature=0, max_tokens=12)
        self.assertEqual(r.object, "text_completion")
        self.assertTrue(r.choices[0].text)
        s = client.completions.create(model=SMOL, prompt="1, 2, 3, 4, 5,", temperature=0, max_tokens=24, stop=[" 8"])
        self.assertNotIn("8", s.choices[0].text)
        self.assertEqual(s.choices[0].finish_reason, "stop")
        one = client.completions.create(model=SMOL, prompt="1, 2, 3, 4, 5,", temperature=0, max_tokens=24, stop=" 8")
        self.assertEqual(one.choices[0].text, s.choices[0].text)

    def test_stream(self):
        chunks = list(client.completions.create(model=GEMMA, prompt="The sky is", temperature=0, max_tokens=8, stream=True))
        text = "".join(c.choices[0].text for c in chunks)
        full = client.completions.create(model=GEMMA, prompt="The sky is", temperature=0, max_tokens=8)
        self.assertEqual(text, full.choices[0].text)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "length")

    def test_two_models_at_once_in_two_workers(self):
        results = {}

        def run(name, fn):
            results[name] = fn()

        threads = [
            threading.Thread(target=run, args=("smol", lambda: client.chat.completions.create(
                model=SMOL, messages=ASK, temperature=0, max_tokens=32))),
            threading.Thread(target=run, args=("gemma", lambda: client.completions.create(
                model=GEMMA, prompt="Once upon a time", temperature=0, max_tokens=32))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertIn("Paris", results["smol"].choices[0].message.content)
        self.assertEqual(results["gemma"].usage.completion_tokens, 32)
        models = raw("GET", "/v1/models").json()["data"]
        pids = {m["id"]: m["worker"]["pid"] for m in models if m["state"] == "ready"}
        self.assertEqual(set(pids), {SMOL, GEMMA})
        self.assertNotEqual(pids[SMOL], pids[GEMMA])


class Errors(unittest.TestCase):
    def test_unknown_model_is_404_model_not_found(self):
        with self.assertRaises(openai.NotFoundError) as cm:
            client.chat.completions.create(model="eden_nope_7b", messages=ASK)
        self.assertEqual(cm.exception.code, "model_not_found")

    def test_bad_parameters_are_400(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            client.chat.completions.create(model=SMOL, messages=ASK, n=0)
        self.assertIn("n must be between 1 and", cm.exception.message)
        with self.assertRaises(openai.BadRequestError):
            client.chat.completions.create(model=SMOL, messages=ASK, temperature=5)
        assert_envelope(self, raw("POST", "/v1/chat/completions", content=b"{not json"), 400)
        assert_envelope(self, raw("POST", "/v1/chat/completions", json={"model": SMOL, "messages": "hi"}), 400)
        assert_envelope(self, raw("POST", "/v1/completions", json={"model": SMOL}), 400)
        assert_envelope(self, raw("POST", "/v1/nothing-here", json={}), 404)

    def test_prompt_longer_than_the_context_names_both_sizes(self):
        with self.assertRaises(openai.BadRequestError) as cm:
            client.completions.create(model=SMOL, prompt="word " * 6000, max_tokens=4)
        self.assertIn("6001 tokens", cm.exception.message)
        self.assertIn("4096 tokens", cm.exception.message)

    def test_body_over_the_limit_is_413(self):
        big = json.dumps({"model": SMOL, "prompt": "a" * (9 << 20)})
        assert_envelope(self, raw("POST", "/v1/completions", content=big.encode()), 413)


class Disconnect(unittest.TestCase):
    def test_a_client_that_goes_away_frees_its_slot(self):
        body = {"model": SMOL, "prompt": "Once upon a time", "max_tokens": 100000, "stream": True,
                "logit_bias": {EOS_SMOL: -100}}
        # Fill both slots with endless generations, read a little, hang up.
        for _ in range(2):
            with httpx.stream("POST", BASE + "/v1/completions", json=body, timeout=60) as r:
                self.assertEqual(r.status_code, 200)
                lines = r.iter_lines()
                while not next(lines).startswith("data: "):
                    pass
        # If the generations were still running, this would wait for a free slot far longer
        # than the timeout.
        r = client.with_options(timeout=60).completions.create(model=SMOL, prompt="Hi", max_tokens=4)
        self.assertEqual(r.usage.completion_tokens, 4)


if __name__ == "__main__":
    unittest.main()
