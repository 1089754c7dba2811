"""A small OpenAI-compatible server for the HTTP engine's failure tests: `python openai_stub_server.py PORT`.

The requested model name picks a behaviour: `ok` answers, `flaky` answers 429 (then 503) to the
first two attempts of each prompt, `auth` wants `Authorization: Bearer secret`, `bad` answers 400,
`slow` waits 3 s, `busy` holds each request 0.3 s (to measure concurrency); `rewriter` and
`judge-keyword` are a scripted Evol rewriter and judge (the judge's score follows a keyword, so a
scorer trained on its labels has something to learn). GET /stats returns the
most requests ever open at once and the request count; GET /reset waits until none is open and
starts that count again.
"""

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"open": 0, "max_open": 0, "requests": 0, "attempts": {}}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/reset":  # once nothing is open (requests abandoned by earlier tests end), start counting anew
            deadline = time.time() + 10
            while STATE["open"] and time.time() < deadline:
                time.sleep(0.05)
            with LOCK:
                STATE["max_open"] = 0
        with LOCK:
            self._send(200, {"max_open": STATE["max_open"], "requests": STATE["requests"]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with LOCK:
            STATE["open"] += 1
            STATE["requests"] += 1
            STATE["max_open"] = max(STATE["max_open"], STATE["open"])
        try:
            self._answer(body)
        finally:
            with LOCK:
                STATE["open"] -= 1

    def _answer(self, body):
        model = body["model"]
        prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        if model == "auth" and self.headers.get("Authorization") != "Bearer secret":
            return self._send(401, {"error": {"message": "invalid api key"}})
        if model == "bad":
            return self._send(400, {"error": {"message": "max_tokens is too large"}})
        if model == "long":  # vLLM's wording
            return self._send(400, {"error": {"message": "This model's maximum context length is 1024 tokens."}})
        if model == "flaky":
            with LOCK:
                seen = STATE["attempts"][prompt] = STATE["attempts"].get(prompt, 0) + 1
            if seen == 1:
                return self._send(429, {"error": {"message": "rate limited"}}, [("Retry-After", "0.1")])
            if seen == 2:
                return self._send(503, {"error": {"message": "overloaded"}})
        if model == "rewriter":  # a scripted Evol rewriter: the given prompt plus "river" or "lake", by the seed
            given = prompt.split("#Given Prompt#:\n", 1)[1].rsplit("\n#Rewritten Prompt#:", 1)[0]
            word = "river" if (body.get("seed") or 0) % 2 else "lake"
            return self._reply(body, f"{given} Mention the {word} too.")
        if model == "judge-keyword":  # a scripted judge: score = 1 + times the variant says "river" (at most 6)
            variants = re.findall(r"^\[(\d+)\] (.*)$", prompt.split("...\n", 1)[1], re.M)
            return self._reply(body, "\n".join(f"[{i}] Score: {min(6, 1 + v.count('river'))}" for i, v in variants))
        if model == "slow":
            time.sleep(3)
        if model == "busy":
            time.sleep(0.3)
        self._reply(body, f"echo {len(prompt)} seed={body.get('seed')}")

    def _reply(self, body, text):
        choice = {"index": 0, "finish_reason": "stop"}
        choice.update({"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text})
        self._send(200, {"choices": [choice], "usage": {"completion_tokens": 4}})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
