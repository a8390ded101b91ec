"""effirl.sandbox: run untrusted Python safely and measure what it costs.

Knows nothing of models or rewards. See docs/sandbox.md.
"""
