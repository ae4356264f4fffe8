"""A byte-level BPE tokenizer laid out like SmolVLM2's (special tokens and ids), trained offline."""

from __future__ import annotations

import json

# Special tokens of the SmolLM2 / SmolVLM2 tokenizer, in id order.
BASE_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
IMAGE_TOKEN = "<image>"
END_OF_UTTERANCE_TOKEN = "<end_of_utterance>"

# A few robot instructions: enough text for the BPE trainer to learn some merges.
_TOKENIZER_CORPUS = (
    "pick up the red cube",
    "pick up the blue cube and place it in the box",
    "open the top drawer",
    "close the bottom drawer",
    "stack the blue cube on the green plate",
    "put the green block on the red block",
    "move the arm to the left of the cup",
    "grasp the pen and put it in the cup",
    "push the red button",
    "fold the towel in half",
    "place the cup on the plate",
    "pick the lego brick and put it in the bin",
    "turn the knob to the right",
    "slide the box to the right side of the table",
    "pour the water into the bowl",
)


def _added_special_tokens(reserved_tokens: int) -> list[str]:
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(reserved_tokens)]
    return [GLOBAL_IMAGE_TOKEN, *rows, FAKE_IMAGE_TOKEN, IMAGE_TOKEN, *reserved, END_OF_UTTERANCE_TOKEN]


def _train_bpe():
    """The byte-level BPE model trained on the corpus, with the three base special tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=2,
        special_tokens=list(BASE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS, trainer)
    return tokenizer


def _pad_vocabulary(tokenizer, base_vocab_size: int):
    """Fill the vocabulary up to ``base_vocab_size`` with placeholder entries no merge ever produces."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    if len(vocab) > base_vocab_size:
        raise ValueError(f"base_vocab_size={base_vocab_size} is smaller than the trained vocabulary")
    for index in range(len(vocab), base_vocab_size):
        vocab[f"<|placeholder_{index}|>"] = index
    return Tokenizer.from_str(json.dumps(spec))


def build_tokenizer(base_vocab_size: int | None = None, reserved_tokens: int = 0):
    """Train a byte-level BPE tokenizer laid out like SmolVLM2's (not its vocabulary) and return it.

    Ids 0-2 are ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``; then the 256 byte symbols and the learned
    merges; with ``base_vocab_size`` the vocabulary is filled up to that size with unreachable placeholder
    entries; then the image/utterance special tokens in SmolVLM2's order. No BOS/EOS is ever added.
    """
    from tokenizers import AddedToken

    tokenizer = _train_bpe()
    if base_vocab_size is not None:
        tokenizer = _pad_vocabulary(tokenizer, base_vocab_size)
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in _added_special_tokens(reserved_tokens)]
    )
    return tokenizer


def _token_entry(content: str) -> dict[str, object]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def _special_tokens_after_base(tokenizer) -> list[str]:
    reserved = 0
    while tokenizer.token_to_id(f"<|reserved_special_token_{reserved}|>") is not None:
        reserved += 1
    return _added_special_tokens(reserved)


def tokenizer_config(tokenizer, truncation_side: str = "right") -> dict[str, object]:
    """``tokenizer_config.json`` of a SmolVLM2-style tokenizer (extra special tokens, pad ``<|im_end|>``)."""
    special = list(BASE_SPECIAL_TOKENS) + _special_tokens_after_base(tokenizer)
    extra = {
        "end_of_utterance_token": END_OF_UTTERANCE_TOKEN,
        "fake_image_token": FAKE_IMAGE_TOKEN,
        "global_image_token": GLOBAL_IMAGE_TOKEN,
        "image_token": IMAGE_TOKEN,
    }
    return {
        "added_tokens_decoder": {str(tokenizer.token_to_id(t)): _token_entry(t) for t in special},
        "additional_special_tokens": [FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN],
        "bos_token": "<|im_start|>",
        "clean_up_tokenization_spaces": False,
        "end_of_utterance_token": END_OF_UTTERANCE_TOKEN,
        "eos_token": END_OF_UTTERANCE_TOKEN,
        "extra_special_tokens": extra,
        "fake_image_token": FAKE_IMAGE_TOKEN,
        "global_image_token": GLOBAL_IMAGE_TOKEN,
        "image_token": IMAGE_TOKEN,
        "model_max_length": 8192,
        "pad_token": "<|im_end|>",
        "padding_side": "right",
        "processor_class": "SmolVLMProcessor",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "truncation_side": truncation_side,
        "unk_token": "<|endoftext|>",
    }


def special_tokens_map() -> dict[str, object]:
    """``special_tokens_map.json`` of a SmolVLM2-style tokenizer."""
    return {
        "additional_special_tokens": [FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN],
        "bos_token": "<|im_start|>",
        "end_of_utterance_token": END_OF_UTTERANCE_TOKEN,
        "eos_token": END_OF_UTTERANCE_TOKEN,
        "fake_image_token": FAKE_IMAGE_TOKEN,
        "global_image_token": GLOBAL_IMAGE_TOKEN,
        "image_token": IMAGE_TOKEN,
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
    }
