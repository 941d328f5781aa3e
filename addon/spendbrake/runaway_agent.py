"""The runaway agent of ``spendbrake demo runaway``: the official openai SDK in a loop that never
stops by itself.

Run as ``python -m spendbrake.runaway_agent INTERVAL``. It calls api.openai.com, as any agent
would, and reaches the demo's fake provider only through ``HTTPS_PROXY``. When its SDK raises,
it stops as an agent with an uncaught error does, and prints one JSON line:
``{"calls": N, "status": 402, "error": "spendbrake: daily budget exceeded ..."}``.
"""

from __future__ import annotations

import json
import sys
import time

import openai

MODEL = "gpt-4o"
PROMPT = "Step {i}: keep going."
MAX_TOKENS = 400
# The fake provider's answers are short; this makes it bill each call as if the model had
# written all the tokens the agent asked for, as a model thinking out loud does.
BILL_AS_WRITTEN = {"x-fake-usage-completion": str(MAX_TOKENS)}


def main() -> int:
    interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
    client = openai.OpenAI(api_key="sk-spendbrake-demo", base_url="https://api.openai.com/v1")
    calls = 0
    try:
        while True:
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": PROMPT.format(i=calls)}],
                max_tokens=MAX_TOKENS,
                extra_headers=BILL_AS_WRITTEN,
            )
            calls += 1
            time.sleep(interval)
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        report = {"calls": calls, "status": e.status_code, "error": body.get("message", str(e))}
    except openai.APIError as e:
        report = {"calls": calls, "status": None, "error": str(e)}
    except KeyboardInterrupt:
        print(json.dumps({"calls": calls, "status": None, "error": "interrupted"}))
        return 130
    print(json.dumps(report))
    return 1


if __name__ == "__main__":
    sys.exit(main())
