"""LangChain's OpenAI integration (`langchain-openai`) against a live `model-bucket serve`:
tool binding, structured output, batched completions and embeddings.

Run by tests/tests/agent_api.rs; EDEN_BASE_URL, EDEN_SMOL and EDEN_GEMMA say where and what.
"""

import asyncio
import math
import os
import unittest

from langchain_openai import ChatOpenAI, OpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

BASE = os.environ["EDEN_BASE_URL"] + "/v1"
SMOL = os.environ["EDEN_SMOL"]
GEMMA = os.environ["EDEN_GEMMA"]
KW = {"base_url": BASE, "api_key": "unused", "max_retries": 0, "timeout": 180}


class Weather(BaseModel):
    """Current weather in a city."""

    city: str = Field(description="The city", max_length=40)


class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=150)


class LangChain(unittest.TestCase):
    def test_bind_tools_returns_tool_calls(self):
        llm = ChatOpenAI(model=SMOL, temperature=0, max_tokens=80, **KW)
        msg = llm.bind_tools([Weather], tool_choice="required").invoke("What is the weather in Oslo?")
        self.assertEqual(len(msg.tool_calls), 1)
        call = msg.tool_calls[0]
        self.assertEqual(call["name"], "Weather")
        Weather(**call["args"])
        self.assertTrue(call["id"])

    def test_structured_output_json_schema(self):
        llm = ChatOpenAI(model=SMOL, temperature=1.0, seed=4, max_tokens=120, **KW)
        person = llm.with_structured_output(Person, method="json_schema").invoke("Invent a person.")
        self.assertIsInstance(person, Person)

    def test_completions_batch(self):
        llm = OpenAI(model=SMOL, temperature=0, max_tokens=8, **KW)
        prompts = ["The capital of France is", "One, two, three,"]
        batched = llm.batch(prompts)
        self.assertEqual(len(batched), 2)
        self.assertTrue(all(batched), batched)
        self.assertNotEqual(batched[0], batched[1])
        together = asyncio.run(llm.abatch(prompts))
        self.assertEqual(len(together), 2)
        self.assertTrue(all(together), together)

    def test_embeddings(self):
        emb = OpenAIEmbeddings(model=GEMMA, check_embedding_ctx_length=False, **KW)
        docs = emb.embed_documents(["The cat sat on the mat.", "A cat sat on a rug.", "Bond yields rose."])
        self.assertEqual(len(docs), 3)
        q = emb.embed_query("Where did the cat sit?")
        self.assertEqual(len(q), len(docs[0]))

        def cos(a, b):
            return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

        self.assertGreater(cos(docs[0], docs[1]), cos(docs[0], docs[2]))


if __name__ == "__main__":
    unittest.main()
