"""The tiny preset's tokenizer, trained offline with the ``tokenizers`` library.

It mimics the Phi-3 (Llama SentencePiece) conventions: ``▁`` word-start marker, BOS ``<s>`` added
by the post-processor, and the chat special tokens. Ids differ from the real tokenizer's, so code
looks special tokens up by name, never by number."""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ftbench.models.processing_phi3v import CHAT_SPECIAL_TOKENS

BASE_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    specials = BASE_SPECIAL_TOKENS + CHAT_SPECIAL_TOKENS
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=list(string.printable.strip()) + ["▁", "\n"],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        additional_special_tokens=CHAT_SPECIAL_TOKENS[1:],
        padding_side="left",
    )
