"""`run_llama.py --option generate`: the course's text continuation.

Continues a prompt (the course's Frankenstein sentence, or --prompt_text) at
temperature 0.0 and 1.0 (or only --temperature) and writes each result to
--generated_sentence_low_temp_out / --generated_sentence_high_temp_out (by default
generated-sentence-temp-0.txt and generated-sentence-temp-<T>.txt, T the sampling temperature).

File format (the course's `generate_sentence`): the decoded prompt followed by
its continuation, no trailing newline.  With --chat (Llama 3 Instruct) the
prompt is wrapped in the chat format and the file holds the assistant's reply.
Decoding stops at the tokenizer's stop ids (eos, <|eot_id|>) or --max_new_tokens.

Every check runs before any output is written, and files are written only
after every text is generated (through a temporary file), so a failure never
leaves a partial result behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from ..fast import prepare_for_decoding
from ..errors import MinillamaError
from ..files import atomic_write_text, check_all_writable, check_distinct_paths
from ..flags import flag
from ..runconfig import RunConfig
from ..core.decoding import strip_after_stop
from ..core.sampling import check_sampling_args

COURSE_PROMPT = ("Victor Frankenstein, a young scientist obsessed with uncovering the secrets of life, "
                 "succeeds in animating a creature assembled from")
COURSE_TEMPERATURES = (0.0, 1.0)


@dataclass
class GenerateConfig:
    low_temp_out: str = flag("generated-sentence-temp-0.txt", "--generated_sentence_low_temp_out",
                             readers="generate", help="default {default}")
    high_temp_out: Optional[str] = flag(None, "--generated_sentence_high_temp_out", readers="generate",
                                        help="default generated-sentence-temp-<T>.txt, T the sampling temperature "
                                             "(1 for the course's pair)")
    prompt_text: Optional[str] = flag(None, "--prompt_text", readers="generate",
                                      help="text to continue (default: the course's)")
    temperature: Optional[float] = flag(None, "--temperature", readers="generate", type=float,
                                        help="one temperature (>= 0) instead of the course's 0.0 and 1.0")
    epsilon: Optional[float] = flag(None, "--epsilon", readers="generate", type=float,
                                    help="epsilon sampling threshold in [0, 1)")
    max_new_tokens: int = flag(75, "--max_new_tokens", readers="generate", help="default {default}")
    chat: bool = flag(False, "--chat", readers="generate", help="wrap the prompt in the Llama 3 Instruct chat format")

    def __post_init__(self):
        for t in self.temperatures:
            check_sampling_args(t, self.epsilon)
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens <= 0:
            raise MinillamaError(f"--max_new_tokens must be a positive integer, got {self.max_new_tokens}")

    @property
    def temperatures(self) -> List[float]:
        """The course's pair, or the single --temperature asked for."""
        return list(COURSE_TEMPERATURES) if self.temperature is None else [self.temperature]

    def output_path(self, temperature: float) -> str:
        """Greedy output goes to the low-temperature file, any sampling to the high one;
        unnamed, that file is named after the temperature used (1 for the course's pair)."""
        if temperature == 0.0:
            return self.low_temp_out
        return self.high_temp_out or f"generated-sentence-temp-{temperature:g}.txt"


def encode_prompt(tokenizer, prompt: str, chat: bool) -> List[int]:
    """Prompt ids, starting with BOS; in the Instruct chat format with --chat."""
    if not chat:
        return tokenizer.encode(prompt, bos=True, eos=False)
    return list(tokenizer.format_chat([{"role": "user", "content": prompt}], add_generation_prompt=True))


def continue_prompt(model, tokenizer, prompt_ids: List[int], temperature: float, cfg: GenerateConfig,
                    seed: int) -> List[int]:
    """New token ids (stop id excluded) after prompt_ids, seeded by --seed for every temperature."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    y = model.generate(x, cfg.max_new_tokens, temperature=temperature, epsilon=cfg.epsilon,
                       eos_id=tokenizer.stop_ids, generator=generator)
    return strip_after_stop(y[0, len(prompt_ids):].tolist(), tokenizer.stop_ids)


def run(run_cfg: RunConfig, cfg: GenerateConfig):
    temps = cfg.temperatures
    outputs = [cfg.output_path(t) for t in temps]
    flags = {"--generated_sentence_low_temp_out" if t == 0.0 else "--generated_sentence_high_temp_out": p
             for t, p in zip(temps, outputs)}
    check_distinct_paths(flags)
    check_all_writable(flags)
    model, tokenizer = run_cfg.load(chat=cfg.chat)
    print(f"load model from {run_cfg.model_path}")
    prompt = COURSE_PROMPT if cfg.prompt_text is None else cfg.prompt_text
    prompt_ids = encode_prompt(tokenizer, prompt, cfg.chat)
    if len(prompt_ids) >= model.input_room:
        raise MinillamaError(f"prompt is {len(prompt_ids)} tokens, the model's context (max_seq_len) is "
                             f"{model.input_room} tokens: shorten --prompt_text")
    room = model.input_room - len(prompt_ids)
    if cfg.max_new_tokens > room:
        print(f"note: --max_new_tokens {cfg.max_new_tokens} lowered to {room}: the prompt's {len(prompt_ids)} "
              f"tokens leave {room} of the model's {model.input_room}")

    prepare_for_decoding(model)  # a sped-up model's decode layout (fast/layout.py)
    texts: Dict[str, str] = {}
    for temperature, path in zip(temps, outputs):
        new_ids = continue_prompt(model, tokenizer, prompt_ids, temperature, cfg, run_cfg.seed)
        # the course writes the whole decoded sequence; a chat prompt is markup, so write the reply only
        texts[path] = tokenizer.decode(new_ids if cfg.chat else prompt_ids + new_ids)
        print(f"Temperature is {temperature}")
        print(texts[path])
        print("---------------")
    for path, text in texts.items():
        atomic_write_text(path, text)
        print(f"Wrote generated sentence to {path}.")
