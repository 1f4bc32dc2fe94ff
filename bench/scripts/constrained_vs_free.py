"""Decode rates of free and JSON-schema-constrained chat requests through a running server,
measured from the client side (whole request, greedy, EOS banned, SmolLM2): one stream each
kind (median of 5), then two constrained and two free streams at once.

    target/release/model-bucket serve --port 18090 --models-dir models --ctx 1024 --parallel 4 --threads 2 &
    python3 bench/scripts/constrained_vs_free.py 18090 LABEL

Run it against two builds one after the other (and again in the other order) to compare them."""
import json, sys, time, urllib.request, threading
port, label = sys.argv[1], sys.argv[2]
url = f"http://127.0.0.1:{port}/v1/chat/completions"
schema = {"type": "object", "properties": {"tool": {"type": "string", "maxLength": 40}, "args": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 8}}, "required": ["tool", "args"]}
def req(constrained, n=64):
    body = {"model": "eden_smollm2_135m", "messages": [{"role": "user", "content": "Give me a tool call as JSON to list files in /tmp and /var."}],
            "max_tokens": n, "temperature": 0, "logit_bias": {"2": -100}}
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    t = time.time()
    r = json.load(urllib.request.urlopen(urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})))
    dt = time.time() - t
    return r["usage"]["completion_tokens"], dt
req(False, 4); req(True, 4)
for constrained in (False, True):
    rates = []
    for _ in range(5):
        n, dt = req(constrained)
        rates.append(n / dt)
    rates.sort()
    print(f"{label}: {'json_schema' if constrained else 'free'} 1 stream: median {rates[2]:.1f} tok/s (whole request, {n} tokens)")
# Four streams at once: two constrained, two free.
res = {}
def run(i):
    res[i] = req(i % 2 == 0)
ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
t = time.time(); [x.start() for x in ts]; [x.join() for x in ts]; dt = time.time() - t
tot = sum(v[0] for v in res.values())
print(f"{label}: 2 json_schema + 2 free streams: {tot / dt:.1f} tok/s in all")
