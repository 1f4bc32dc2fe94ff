"""The OpenAI Agents SDK (`openai-agents`, tracing off) running an agent with two function
tools to completion on SmolLM2, through Model Bucket's Responses endpoint: the forced call
comes back as a Responses function call, the SDK runs the tool, and its answer ends the run.
(Continuing a conversation with `function_call_output` items is test_responses.py's.)

Run by tests/tests/dialects.rs against a live `model-bucket serve`; EDEN_BASE_URL and EDEN_SMOL
say where and what.
"""

import os
import unittest

from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

BASE = os.environ["EDEN_BASE_URL"]
SMOL = os.environ["EDEN_SMOL"]

set_tracing_disabled(True)
client = AsyncOpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=180)
CALLED = []


# A city defaults, and other argument names are ignored: in `auto` turns the 135M model's call
# is free text, and this suite is about the plumbing, not the model's skill.
@function_tool
def get_weather(city: str = "Paris") -> str:
    """The current weather in a city."""
    CALLED.append(("get_weather", city))
    return f"It is sunny and 21 degrees in {city}."


@function_tool
def get_time(city: str = "Paris") -> str:
    """The local time in a city."""
    CALLED.append(("get_time", city))
    return f"It is 14:05 in {city}."


class AgentsSdk(unittest.TestCase):
    def test_a_two_tool_agent_runs_to_completion(self):
        agent = Agent(
            name="assistant",
            instructions="You answer questions about cities. Use the tools.",
            tools=[get_weather, get_time],
            model=OpenAIResponsesModel(model=SMOL, openai_client=client),
            model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=120),
            # The tool's answer is the agent's: a 135M model, offered tools again, tends to call
            # them again rather than answer in prose.
            tool_use_behavior="stop_on_first_tool",
        )
        result = Runner.run_sync(agent, "What is the weather in Paris?", max_turns=3)
        self.assertEqual(len(CALLED), 1, CALLED)
        name, city = CALLED[0]
        want = {"get_weather": f"It is sunny and 21 degrees in {city}.", "get_time": f"It is 14:05 in {city}."}
        self.assertEqual(result.final_output, want[name])
        self.assertEqual([i.type for i in result.new_items], ["tool_call_item", "tool_call_output_item"])
        # The call came back as a Responses function call with its own call ID.
        calls = [o for o in result.raw_responses[0].output if o.type == "function_call"]
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0].name, name)
        self.assertTrue(calls[0].call_id)


if __name__ == "__main__":
    unittest.main()
