"""A tiny random Llama saved like any pretrained model, with its own tokenizer: no hub, seconds.

Hidden 64, 2 heads of 32 (the smallest head size vLLM's CPU attention serves), 2 layers, and a
byte-level BPE of 512 tokens trained with ``tokenizers`` on the first lines of WikiText-2's
training split. ``build(path)`` writes ``config.json``, ``model.safetensors`` and the tokenizer
files; the ``hf`` family loads the folder as ``name_or_path`` and the ``hf`` source as ``tokenizer``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2"
VOCAB = 512


def train_tokenizer(lines: list[str], vocab_size: int = VOCAB):
    """A byte-level BPE (GPT-2's scheme) with ``<bos>``/``<eos>``, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


def build(path: Path, *, head_dim: int = 32, lines: int = 4000, seed: int = 0) -> Path:
    """Write the tiny Llama (``head_dim`` 32; 16 for a model vLLM's CPU build refuses) to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    text = (WIKITEXT / "train.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = train_tokenizer([t for t in text[:lines] if t.strip()])
    heads = 64 // head_dim
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=heads, head_dim=head_dim,
        max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # random weights sharp enough that sampling is not near-uniform
        model.lm_head.weight.mul_(40.0)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
