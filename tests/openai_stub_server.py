"""A small OpenAI-compatible server for the HTTP engine's failure tests: `python openai_stub_server.py PORT`.

The requested model name picks a behaviour: `ok` answers, `flaky` answers 429 (then 503) to the
first two attempts of each prompt, `auth` wants `Authorization: Bearer secret`, `bad` answers 400,
`slow` waits 3 s, `busy` holds each request 0.3 s (to measure concurrency). Faults: `day` answers
429 with Retry-After: 86400, `drip` sends its body one byte a second, `drop` closes the connection
mid-body, `html` answers 200 with a web page, `cutjson` 200 with cut JSON, `nochoices` 200 with
`choices: []`, `missing` 404; `glitch-KIND` answers with fault KIND to the first attempt of each
prompt and properly after (a glitch worth a retry); `rewriter` and
`judge-keyword` are a scripted Evol rewriter and judge (the judge's score follows a keyword, so a
scorer trained on its labels has something to learn); `mt-judge-WORD` is a scripted MT-Bench judge that rewards
answers saying WORD (deita_ray.engines.fake.scripted_judgement, served over HTTP). GET /stats returns the
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
# The clause `rewriter-lang` adds, in the script of the text it rewrites (CJK first: kana before ideographs).
LANGUAGE_CLAUSES = [("[\u3040-\u30ff]", "川についても書いてください。"), ("[\u4e00-\u9fff]", "也请提到一条河。"),
                    ("[\u0400-\u04ff]", " Упомяните также реку.")]
STATE = {"open": 0, "max_open": 0, "requests": 0, "attempts": {}}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _leave(self):
        """This request no longer counts as open: called before its answer is written (once the client has the
        answer it may send the next request at once, which must not overlap this one in the count)."""
        if getattr(self, "_open", False):
            self._open = False
            with LOCK:
                STATE["open"] -= 1

    def _send(self, code, body, headers=()):
        self._leave()
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
            self._send(200, {"max_open": STATE["max_open"], "requests": STATE["requests"], "open": STATE["open"]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with LOCK:
            STATE["open"] += 1
            STATE["requests"] += 1
            STATE["max_open"] = max(STATE["max_open"], STATE["open"])
        self._open = True
        try:
            self._answer(body)
        finally:
            self._leave()

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
        if model in ("rewriter-lang", "rewriter-sorry"):  # a clause in the seed's own script, or an apology
            marker = "#Rewritten Prompt#:" if "#Rewritten Prompt#:" in prompt else "#Rewritten Response#:"
            given = prompt.split("#Given Response#:\n" if "Response#:" in marker else "#Given Prompt#:\n", 1)[1]
            given = given.rsplit("\n" + marker, 1)[0]
            if model == "rewriter-sorry":
                return self._reply(body, "Sorry, I cannot improve this response.")
            clause = next((c for script, c in LANGUAGE_CLAUSES if re.search(script, given)), " Mention a river too.")
            return self._reply(body, given + clause)
        if model == "judge-keyword-slow":  # the same judge, 0.2 s per request (something to interrupt)
            time.sleep(0.2)
            model = "judge-keyword"
        if model == "judge-keyword":  # a scripted judge: score = 1 + times the variant says "river" (at most 6)
            variants = re.findall(r"^\[(\d+)\] (.*)$", prompt.split(" [2] Score: 2\n", 1)[1], re.M)
            return self._reply(body, "\n".join(f"[{i}] Score: {min(6, 1 + v.count('river'))}" for i, v in variants))
        if model.startswith("mt-judge-"):
            from deita_ray.engines.fake import scripted_judgement

            text = "\n".join(m["content"] for m in body["messages"]) if "messages" in body else body["prompt"]
            return self._reply(body, scripted_judgement(text, model[len("mt-judge-"):]))
        if model.startswith("glitch-"):
            with LOCK:
                seen = STATE["attempts"][(model, prompt)] = STATE["attempts"].get((model, prompt), 0) + 1
            if seen == 1:
                return self._fault(model[len("glitch-"):])
            return self._reply(body, f"echo {len(prompt)} after a glitch")
        if model in ("day", "drip", "drop", "html", "cutjson", "nochoices", "missing"):
            return self._fault(model)
        if model == "slow":
            time.sleep(3)
        if model == "busy":
            time.sleep(0.3)
        self._reply(body, f"echo {len(prompt)} seed={body.get('seed')}")

    def _fault(self, kind):
        if kind == "day":
            return self._send(429, {"error": {"message": "rate limited"}}, [("Retry-After", "86400")])
        if kind == "missing":
            return self._send(404, {"error": {"message": "The model `missing` does not exist."}})
        if kind == "nochoices":
            return self._send(200, {"choices": [], "usage": {"completion_tokens": 0}})
        raw = {"html": b"<html><body>502 Bad Gateway</body></html>", "cutjson": b'{"choices": [{"message": {"con',
               "drop": b'{"choices": [{"message": {"content": "x"}}]}', "drip": b'{"choices": []}'}[kind]
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if kind == "html" else "application/json")
        self.send_header("Content-Length", str(len(raw) + (100 if kind == "drop" else 0)))
        self.end_headers()
        if kind == "drip":
            for byte in raw:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(1)
            return
        self.wfile.write(raw[:10] if kind == "drop" else raw)
        self.wfile.flush()
        if kind == "drop":
            self.close_connection = True
            self.connection.shutdown(2)

    def _reply(self, body, text):
        choice = {"index": 0, "finish_reason": "stop"}
        choice.update({"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text})
        self._send(200, {"choices": [choice], "usage": {"completion_tokens": 4}})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
