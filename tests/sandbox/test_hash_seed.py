"""String hashes, hence set iteration order, are the same in every worker and every sandbox."""

from __future__ import annotations

from sandbox import FunctionJob, FunctionTest, Sandbox, SandboxConfig

SET_ORDER = (
    "def order():\n    return (hash('effirl'), list({'apple', 'fig', 'kiwi', 'mango', 'guava', 'durian'}))\n"
)


def test_str_hash_and_set_order_do_not_vary_between_workers_or_sandboxes() -> None:
    job = FunctionJob(SET_ORDER, "order", (FunctionTest(()),), want_outputs=True)
    outputs = []
    for _ in range(2):
        with Sandbox(SandboxConfig(workers=2, timeout_s=5.0)) as box:
            outputs += [result.outputs[0] for result in box.run_many([job] * 4)]
    assert len({(h, tuple(order)) for h, order in outputs}) == 1
