"""What a run reports of its own speed: model FLOPs from the model's config, per step, against the device's limit."""

import pyarrow.parquet as pq
import pytest

from deita_ray.engines.flops import ModelShape


def test_flop_arithmetic_on_a_model_of_known_shape():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=96, vocab_size=100)
    shape = ModelShape.from_config(config)
    model = LlamaForCausalLM(config)
    weights = sum(p.numel() for name, p in model.model.layers.named_parameters() if "norm" not in name)
    assert shape.body_params == weights  # q, k, v, o (grouped k, v) and the gated MLP, every layer
    assert (shape.hidden, shape.layers, shape.vocab) == (64, 3, 100)
    # 2 FLOPs per weight per token, causal attention 2 * layers * hidden * L^2, the head where logits are read.
    assert shape.forward([10, 20], head_positions=2) == 2 * weights * 30 + 2 * 3 * 64 * (100 + 400) + 2 * 64 * 100 * 2
    assert shape.generation(10, 5) == shape.forward([15], head_positions=5)
    with torch.no_grad():  # the measured counterpart: torch's FLOP counter over one forward of 32 tokens
        from torch.utils.flop_counter import FlopCounterMode

        ids = torch.randint(0, 100, (1, 32))
        with FlopCounterMode(display=False) as counter:
            model(ids)
        measured = counter.get_total_flops()
    # Every matrix product to the FLOP (the counter does not see inside scaled_dot_product_attention on the CPU).
    assert measured == shape.forward([32], head_positions=32) - 2 * 3 * 64 * 32 ** 2


def test_score_summary_reports_flops_and_its_share_of_the_limit(pool_dir, hf_configs, scorers, tmp_path):
    from conftest import run_step

    summary = run_step("score", inputs=[str(pool_dir / "sharegpt.jsonl")], output=str(tmp_path), **scorers)
    shape = ModelShape.of(hf_configs["complexity"].model)
    rows = pq.read_table(str(tmp_path / "scored"), columns=["complexity_flops", "complexity_tokens", "num_turns"])
    for flops, tokens, turns in zip(*(rows.column(c).to_pylist() for c in rows.column_names)):
        # between the weights' share alone and one sequence of every turn's tokens (sum of L^2 <= (sum of L)^2)
        assert 2 * shape.body_params * tokens + 2 * shape.hidden * shape.vocab * turns <= flops
        assert flops <= shape.forward([tokens], turns)
    both = pq.read_table(str(tmp_path / "scored"), columns=["complexity_flops", "quality_flops"])
    assert summary["model_flops"] == pytest.approx(sum(sum(both.column(c).to_pylist()) for c in both.column_names))
    assert summary["peak"]["per"] == "cpu" and summary["peak"]["total"] > 0
    assert 0 < summary["peak_fraction"] < 1 and summary["model_flops_per_s"] > 0
