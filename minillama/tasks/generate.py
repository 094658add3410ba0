"""`run_llama.py --option generate`: the course's text continuation.

Continues a prompt (the course's Frankenstein sentence, or --prompt_text) at
temperature 0.0 and 1.0 (or only --temperature) and writes each result to
--generated_sentence_low_temp_out / --generated_sentence_high_temp_out.

File format (the course's `generate_sentence`): the decoded prompt followed by
its continuation, no trailing newline.  With --chat (Llama 3 Instruct) the
prompt is wrapped in the chat format and the file holds the assistant's reply.
Decoding stops at the tokenizer's stop ids (eos, <|eot_id|>) or --max_new_tokens.

Every check runs before any output is written, and files are written only
after every text is generated (through a temporary file), so a failure never
leaves a partial result behind.
"""
from __future__ import annotations

from typing import Dict, List

import torch

from ..errors import MinillamaError
from ..files import atomic_write_text, check_writable
from ..sampling import check_sampling_args, strip_after_stop
from . import load_from_args

COURSE_PROMPT = ("Victor Frankenstein, a young scientist obsessed with uncovering the secrets of life, "
                 "succeeds in animating a creature assembled from")
COURSE_TEMPERATURES = (0.0, 1.0)


def temperatures(args) -> List[float]:
    """The course's pair, or the single --temperature asked for."""
    temps = list(COURSE_TEMPERATURES) if args.temperature is None else [args.temperature]
    for t in temps:
        check_sampling_args(t, args.epsilon)
    return temps


def output_path(args, temperature: float) -> str:
    """Greedy output goes to the low-temperature file, any sampling to the high one."""
    return args.generated_sentence_low_temp_out if temperature == 0.0 else args.generated_sentence_high_temp_out


def encode_prompt(tokenizer, prompt: str, chat: bool) -> List[int]:
    """Prompt ids, starting with BOS; in the Instruct chat format with --chat."""
    if not chat:
        return tokenizer.encode(prompt, bos=True, eos=False)
    if not hasattr(tokenizer, "format_chat"):
        raise MinillamaError(f"--chat needs a Llama 3 tokenizer with a chat format; {tokenizer.family} "
                             "tokenizers have none: drop --chat or use a Llama 3.2 Instruct directory")
    return list(tokenizer.format_chat([{"role": "user", "content": prompt}], add_generation_prompt=True))


def continue_prompt(model, tokenizer, prompt_ids: List[int], temperature: float, args) -> List[int]:
    """New token ids (stop id excluded) after prompt_ids, seeded by --seed for every temperature."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(args.seed)
    x = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    y = model.generate(x, args.max_new_tokens, temperature=temperature, epsilon=args.epsilon,
                       eos_id=tokenizer.stop_ids, generator=generator)
    return strip_after_stop(y[0, len(prompt_ids):].tolist(), tokenizer.stop_ids)


def run(args):
    temps = temperatures(args)
    outputs = [output_path(args, t) for t in temps]
    for path in outputs:
        check_writable(path)
    model, tokenizer = load_from_args(args)
    print(f"load model from {args.pretrained_model_path}")
    prompt = COURSE_PROMPT if args.prompt_text is None else args.prompt_text
    prompt_ids = encode_prompt(tokenizer, prompt, args.chat)
    if len(prompt_ids) >= model.input_room:
        raise MinillamaError(f"prompt is {len(prompt_ids)} tokens, the model's context (max_seq_len) is "
                             f"{model.input_room} tokens: shorten --prompt_text")

    texts: Dict[str, str] = {}
    for temperature, path in zip(temps, outputs):
        new_ids = continue_prompt(model, tokenizer, prompt_ids, temperature, args)
        # the course writes the whole decoded sequence; a chat prompt is markup, so write the reply only
        texts[path] = tokenizer.decode(new_ids if args.chat else prompt_ids + new_ids)
        print(f"Temperature is {temperature}")
        print(texts[path])
        print("---------------")
    for path, text in texts.items():
        atomic_write_text(path, text)
        print(f"Wrote generated sentence to {path}.")
