// The official OpenAI Node SDK against a running Model Bucket: list, retrieve, chat, stream,
// completions, and errors. Usage: node sdk.mjs BASE_URL CHAT_MODEL TEXT_MODEL [API_KEY]
import assert from "node:assert/strict";
import OpenAI from "openai";

const [base, chatModel, textModel, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: apiKey ?? "local", maxRetries: 0 });
const cases = [];
const test = (name, fn) => cases.push([name, fn]);

test("models.list includes both models and the tasks", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(chatModel), ids.join(","));
  assert.ok(ids.includes(textModel), ids.join(","));
});

test("models.retrieve by alias", async () => {
  const m = await client.models.retrieve("eden_smollm2_135m");
  assert.equal(m.id, chatModel);
  assert.equal(m.object, "model");
});

test("chat completion answers Paris", async () => {
  const r = await client.chat.completions.create({
    model: chatModel,
    messages: [{ role: "user", content: "What is the capital of France? Answer in one word." }],
    max_tokens: 16,
    temperature: 0,
  });
  assert.equal(r.object, "chat.completion");
  assert.match(r.choices[0].message.content, /Paris/);
  assert.equal(r.choices[0].message.role, "assistant");
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
});

test("streamed chat with usage", async () => {
  const stream = await client.chat.completions.create({
    model: chatModel,
    messages: [{ role: "user", content: "What is the capital of France? Answer in one word." }],
    max_tokens: 16,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta?.content ?? "";
      finish = c.finish_reason ?? finish;
    }
  }
  assert.match(text, /Paris/);
  assert.ok(finish === "stop" || finish === "length", String(finish));
  assert.ok(usage && usage.completion_tokens > 0);
});

test("text completion, streamed and not", async () => {
  const r = await client.completions.create({ model: textModel, prompt: "The capital of France is", max_tokens: 4, temperature: 0 });
  assert.equal(r.object, "text_completion");
  assert.ok(r.choices[0].text.length > 0);
  const stream = await client.completions.create({ model: textModel, prompt: "One, two,", max_tokens: 4, stream: true });
  let n = 0;
  for await (const chunk of stream) n += chunk.choices.length;
  assert.ok(n > 0);
});

test("errors: unknown model is a 404 NotFoundError with the OpenAI shape", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === "model_not_found",
  );
});

test("errors: a bad parameter is a 400 BadRequestError", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: chatModel, messages: [{ role: "user", content: "hi" }], temperature: -3 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400,
  );
});

let failed = 0;
for (const [name, fn] of cases) {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}: ${e.stack ?? e}`);
  }
}
console.log(`${cases.length - failed}/${cases.length} passed`);
process.exit(failed ? 1 : 0);
