"""The suite-wide check that no user text is logged (tests/support/user_text_guard.py) finds one in a log line."""

from __future__ import annotations

import json

from tests.support.hostile_input import MARKER

# -- the suite-wide check ----------------------------------------------------------------------------


def test_the_suite_wide_log_check_finds_user_text_in_a_log_line() -> None:
    from tests.support.user_text_guard import UserTexts, leaks

    texts = UserTexts()
    texts.record({"task": "chat", "messages": [{"role": "user", "content": f'Tell me about {MARKER}, "quoted".'}]})
    lines = [
        json.dumps({"message": "request failed", "error": f"content: bad (got 'Tell me about {MARKER}, \"quoted\".')"})
    ]

    assert leaks(texts.probes, lines)
    assert not leaks(texts.probes, [json.dumps({"message": "request failed", "task": "chat", "role": "user"})])
