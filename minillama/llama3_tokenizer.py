"""The Llama 3 tokenizer: tiktoken byte-level BPE plus 256 special tokens.

`tokenizer.model` lists 128000 BPE ranks (`base64(bytes) rank` per line).  Text
is first split by a regex (contractions, letter runs, 1-3 digit groups,
punctuation, whitespace) and each piece is BPE-merged; ids 128000..128255 are
special tokens such as <|begin_of_text|> and <|eot_id|>.

Special tokens are *not* recognised in ordinary text (allowed_special=()): a
user typing "<|eot_id|>" gets the ids of those characters, so text cannot forge
chat structure.  Callers that build prompts with special tokens pass
allowed_special="all" or, better, use `format_chat`, which inserts their ids.

Same interface as tokenizer.SentencePieceTokenizer: encode, decode, vocab_size,
bos_id, eos_id, pad_id, stop_ids, family; plus eot_id and format_chat.
"""
from __future__ import annotations

from typing import Collection, Dict, Iterator, List, Mapping, Sequence, Union

from .errors import MinillamaError

# Split regex of Meta's reference tokenizer (and tokenizer.json's pre-tokenizer)
PAT_STR = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
NUM_BPE_TOKENS = 128000
NUM_SPECIAL_TOKENS = 256
NAMED_SPECIAL_TOKENS = [
    "<|begin_of_text|>",  # 128000
    "<|end_of_text|>",  # 128001
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",  # 128004
    "<|step_id|>",
    "<|start_header_id|>",  # 128006
    "<|end_header_id|>",  # 128007
    "<|eom_id|>",  # 128008: end of message (tool calls)
    "<|eot_id|>",  # 128009: end of turn
    "<|python_tag|>",  # 128010
]
# tiktoken is quadratic on very long runs without a split point: Meta's reference
# encodes at most 400k characters at a time and cuts runs of only-whitespace or
# only-non-whitespace characters every 25k characters.  We do the same, so ids
# equal Meta's on such input and encoding stays fast.
MAX_ENCODE_CHARS = 400_000
MAX_NO_WHITESPACE_CHARS = 25_000


def special_token_names() -> List[str]:
    """The 256 special tokens in id order (128000..128255)."""
    n_reserved = NUM_SPECIAL_TOKENS - len(NAMED_SPECIAL_TOKENS)
    return NAMED_SPECIAL_TOKENS + [f"<|reserved_special_token_{2 + i}|>" for i in range(n_reserved)]


def split_long_runs(text: str, max_run: int = MAX_NO_WHITESPACE_CHARS) -> Iterator[str]:
    """Cut text wherever a run of whitespace (or of non-whitespace) exceeds max_run chars."""
    run, is_space, start = 0, text[:1].isspace(), 0
    for i, ch in enumerate(text):
        now_space = ch.isspace()
        if now_space != is_space:
            run, is_space = 1, now_space
        else:
            run += 1
            if run > max_run:
                yield text[start:i]
                start, run = i, 1
    yield text[start:]


class Llama3Tokenizer:
    family = "llama3"

    def __init__(self, path: str):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        try:
            ranks = load_tiktoken_bpe(path)
        except Exception as e:  # tiktoken raises ValueError/binascii.Error/... on a foreign file
            raise MinillamaError(f"{path}: not a tiktoken BPE file ({type(e).__name__}); "
                                 "pass Llama 3's tokenizer.model") from None
        if len(ranks) != NUM_BPE_TOKENS:
            raise MinillamaError(f"{path}: {len(ranks)} BPE ranks, Llama 3's tokenizer.model has {NUM_BPE_TOKENS}")
        self.path = path
        self.special_tokens: Dict[str, int] = {name: NUM_BPE_TOKENS + i for i, name in enumerate(special_token_names())}
        self.model = tiktoken.Encoding(name="llama3", pat_str=PAT_STR, mergeable_ranks=ranks,
                                       special_tokens=self.special_tokens)
        self.vocab_size = NUM_BPE_TOKENS + NUM_SPECIAL_TOKENS  # 128256
        self.bos_id = self.special_tokens["<|begin_of_text|>"]
        self.eos_id = self.special_tokens["<|end_of_text|>"]
        self.eot_id = self.special_tokens["<|eot_id|>"]
        self.eom_id = self.special_tokens["<|eom_id|>"]
        self.pad_id = self.special_tokens["<|finetune_right_pad_id|>"]
        self.start_header_id = self.special_tokens["<|start_header_id|>"]
        self.end_header_id = self.special_tokens["<|end_header_id|>"]
        # base models end with <|end_of_text|>, Instruct turns with <|eot_id|> or <|eom_id|>
        self.stop_ids = [self.eos_id, self.eom_id, self.eot_id]

    def encode(self, text: str, bos: bool = True, eos: bool = False,
               allowed_special: Union[str, Collection[str]] = ()) -> List[int]:
        """text -> ids.  allowed_special: special-token names to recognise in text
        ("all" for every one); any other special-token text is encoded as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        allowed = allowed_special if allowed_special == "all" else set(allowed_special)
        ids = [self.bos_id] if bos else []
        for i in range(0, len(text), MAX_ENCODE_CHARS):
            for piece in split_long_runs(text[i:i + MAX_ENCODE_CHARS]):
                ids.extend(self.model.encode(piece, allowed_special=allowed, disallowed_special=()))
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """ids -> text; bytes that are not valid UTF-8 (a cut multi-byte char) become U+FFFD."""
        return self.model.decode([int(i) for i in ids])

    # -- Instruct chat format ---------------------------------------------------------
    def encode_header(self, role: str) -> List[int]:
        """<|start_header_id|>{role}<|end_header_id|>\\n\\n"""
        return [self.start_header_id] + self.encode(role, bos=False) + [self.end_header_id] + self.encode("\n\n", bos=False)

    def encode_message(self, message: Mapping[str, str]) -> List[int]:
        """header, then the content (stripped, as Meta's reference does), then <|eot_id|>."""
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise MinillamaError(f"chat message must be a dict with 'role' and 'content', got {message!r}")
        return self.encode_header(message["role"]) + self.encode(message["content"].strip(), bos=False) + [self.eot_id]

    def format_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> List[int]:
        """Llama 3 Instruct dialog: <|begin_of_text|> + each message
        (+ an open assistant header so the model writes the reply)."""
        ids = [self.bos_id]
        for message in messages:
            ids.extend(self.encode_message(message))
        if add_generation_prompt:
            ids.extend(self.encode_header("assistant"))
        return ids
